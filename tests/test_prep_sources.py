"""Input locations of make-shards (prep.sources): safe joins, and reading a file:// URL through
fsspec exactly as the same local file (fast; the S3 round trip is in test_shards_storage_s3)."""

from __future__ import annotations

import os

import pytest

from prep.errors import EmptyInputError
from prep.sources import fetch_posts, location, read_source, stat_sources


@pytest.mark.parametrize("bad", ["", "../x.png", "a/../../x.png", "/etc/passwd", "..\\x.png"])
def test_unsafe_image_paths_have_no_location(tmp_path, bad):
    assert location(tmp_path, bad) is None
    assert location("s3://bucket/raw", bad) is None


def test_locations_join_folders_and_urls(tmp_path):
    assert location(tmp_path, "images\\ab/c.png") == str(tmp_path / "images" / "ab" / "c.png")
    assert location("s3://bucket/raw/", "images/c.png") == "s3://bucket/raw/images/c.png"


def test_a_url_reads_and_stats_like_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"picture")
    url = location(f"file://{tmp_path}", "a/x.png")
    assert url == f"file://{tmp_path}/a/x.png"
    assert read_source(url) == read_source(str(tmp_path / "a" / "x.png")) == b"picture"
    with pytest.raises(FileNotFoundError):
        read_source(f"file://{tmp_path}/a/missing.png")
    local = str(tmp_path / "a" / "x.png")
    (size, _), (url_size, stamp), missing, none = stat_sources(
        [local, url, f"file://{tmp_path}/a/missing.png", None])
    assert size == url_size == 7 and missing is none is None
    os.utime(local, ns=(0, 10**18))  # a rewritten object gets another stamp
    assert stat_sources([url])[0] != (url_size, stamp)


def test_posts_are_fetched_with_their_image_root(tmp_path):
    (tmp_path / "raw" / "posts").mkdir(parents=True)
    for name in ("part-0.parquet", "part-1.jsonl", "notes.txt"):
        (tmp_path / "raw" / "posts" / name).write_bytes(name.encode())
    url = f"file://{tmp_path}/raw/"
    files, root = fetch_posts(url, (".parquet", ".jsonl"))
    assert root == f"file://{tmp_path}/raw"
    assert [f.name for f in files] == ["part-0.parquet", "part-1.jsonl"]
    assert [f.read_bytes() for f in files] == [b"part-0.parquet", b"part-1.jsonl"]
    one, root = fetch_posts(f"{url}posts/part-1.jsonl", (".jsonl",))
    assert root == f"{url}posts" and one[0].read_bytes() == b"part-1.jsonl"
    with pytest.raises(EmptyInputError):
        fetch_posts(f"file://{tmp_path}/empty", (".parquet",))
