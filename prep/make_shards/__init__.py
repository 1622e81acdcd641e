"""``prep make-shards``: posts + images + tag index in, WebDataset shards out (the format:
:mod:`shards.format`).

    prep make-shards --posts raw/ --tags tags.csv --out shards/
    prep make-shards --folder my_images/ --out shards/
    prep make-shards --posts s3://bucket/raw/ --tags tags.csv --out s3://bucket/ds/

The modules, in the order a run uses them:

    job           ShardJob and ShardSettings: what a run is asked to do
    source        the input: posts files (local or at URLs) + tags.csv, or a folder
    first_pass    every picture prepared, hashed and encoded once; the first-pass cache in
                  out/.stage/ (not the upload folder, --staging)
    plan          selection, groups, split, shards: ShardSpec and Plan
    output        the shard folder: lock, resume check, manifest
    upload        --out s3://...: shards built in the upload folder (--staging), uploaded
    shard         build_shard, the one per-shard build function, and what engines share
    engine_local  the engines, peers with one signature (shard.Engine): the image pool here,
    engine_ray    or one Ray task per shard
    build         the driver, make_shards: from a ShardJob to a finished folder
    report        ShardReport and the summary lines
"""

from .build import make_shards
from .job import ShardJob, ShardSettings
from .report import ShardReport, shards_summary

__all__ = ["ShardJob", "ShardReport", "ShardSettings", "make_shards", "shards_summary"]
