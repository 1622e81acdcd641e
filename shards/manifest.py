"""``manifest.json``: read and check it, list a split's shards, complete it, write it.

    manifest = read_manifest("shards/")          # or a URL, or the .json itself
    manifest = read_manifest("shards/", allow_incomplete=False)   # refuse an unfinished build
    shards = split_shards(manifest, "shards/", "train")   # [{"url", "name", "samples"}]
    split = split_of("shards/", manifest, "train")   # Split: urls, samples, counts (a reader's)
    split_samples(manifest, "train")             # successes in the split
    manifest = new_manifest(shards={"train": [("00000", 500)], "val": []}, ...)  # the body
    write_manifest(Path("shards"), manifest)     # checked, then written atomically
    manifest = complete(Path("shards"), manifest)    # counts and bytes from every shard's stats
    pattern_manifest("https://host/ds/train/{00000..00099}.tar")   # counts from each shard

A manifest names its format and version (FORMAT_NAME, FORMAT_VERSION), says whether the build
is ``complete``, and lists per split the shards by name (``<split>/<name>.tar`` beside the
manifest) or, for a listing made from a brace pattern, by ``url``. Torch-free: prep uses it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .errors import ManifestError
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, ShardPaths, is_url, join_location
from .format import manifest_location as _manifest_location
from .streams import count_samples, expand_pattern, open_stream

log = logging.getLogger(__name__)


@dataclass
class Split:
    """The shards of one split as a reader streams them: their URLs and sample counts."""

    urls: list[str]
    samples: int
    counts: list[int] | None = None     # samples per shard; None: unknown, taken as equal

    def shard_counts(self) -> list[int]:
        """Samples per shard: the recorded counts, or ``samples`` spread evenly."""
        if self.counts is not None:
            return list(self.counts)
        q, r = divmod(self.samples, len(self.urls))
        return [q + (i < r) for i in range(len(self.urls))]


def read_manifest(source: str | Path, allow_incomplete: bool = True) -> dict[str, Any]:
    """The manifest of a shard root (local or URL). Raises ManifestError.

    With ``allow_incomplete`` False a build that is not finished is refused (as ``train``
    does); the default reads it as it is (make-shards resuming it, merge-shards, readers that
    check completeness per split with :func:`split_shards`)."""
    location, _ = _manifest_location(source)
    try:
        if is_url(location):
            with open_stream(location) as stream:
                text = stream.read()
        else:
            text = Path(location).read_bytes()
        manifest = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read the shard manifest {location}: {exc}") from exc
    check_manifest(manifest, location)
    if not allow_incomplete and not manifest.get("complete"):
        raise ManifestError(f"{source}: the shard build is not finished; run the same `prep "
                            "make-shards` command again to finish it (`prep merge-shards` for a "
                            "build split over nodes), or pass --allow-incomplete")
    return manifest


def check_manifest(manifest: Any, location: str) -> None:
    """Raise ManifestError unless ``manifest`` is one of ours, of this version, with splits."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ManifestError(f"{location} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{location}: format version {manifest.get('format_version')!r}, "
                            f"this reader knows version {FORMAT_VERSION}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not all(
            isinstance(s, dict) and isinstance(s.get("shards"), list) for s in splits.values()):
        raise ManifestError(f"{location}: 'splits' must map each split to a list of shards")


def split_shards(manifest: dict[str, Any], source: str | Path, split: str,
                 allow_incomplete: bool = False) -> list[dict[str, Any]]:
    """``{"url", "name", "samples"}`` for each shard of ``split``, in order.

    Raises ManifestError for an unknown split, or (unless ``allow_incomplete``) a build that
    the manifest does not mark complete.
    """
    location, base = _manifest_location(source)
    if not allow_incomplete and not manifest.get("complete"):
        raise ManifestError(f"{location}: the shards are not complete (prep make-shards was "
                            "interrupted or is still running; rerun it to finish)")
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ManifestError(f"{location}: no split {split!r} (has: {', '.join(splits)})")
    return [{"url": shard.get("url") or join_location(base, split, f"{shard['name']}.tar"),
             "name": shard["name"], "samples": shard.get("successes")}
            for shard in splits[split]["shards"]]


def split_of(source: str | Path, manifest: dict[str, Any], name: str) -> Split:
    """Shard URLs and sample counts of one split (train or val) of a shards manifest. Shards
    without a sample count are left out when others have one (unfinished shards of a build
    read with --allow-incomplete); when none has one (a brace pattern), the split's count is
    taken as spread evenly. Raises ManifestError for an unknown split."""
    shards = split_shards(manifest, source, name, allow_incomplete=True)
    done = [s for s in shards if s["samples"] is not None]
    if not done:
        return Split([s["url"] for s in shards], split_samples(manifest, name))
    counts = [int(s["samples"]) for s in done]
    return Split([s["url"] for s in done], sum(counts), counts)


def split_samples(manifest: dict[str, Any], split: str) -> int:
    """The number of samples (successes) in ``split``; 0 when the manifest does not say."""
    info = manifest.get("splits", {}).get(split) or {}
    return int(info.get("successes") or 0)


def pattern_manifest(pattern: str, samples: int | None = None,
                     task: str | None = None) -> dict[str, Any]:
    """A complete one-split (``train``) manifest for a brace pattern of tar URLs, which have
    no manifest of their own. Each shard's sample count comes from its ``_stats.json`` (which
    make-shards writes beside the tar) or, where there is none, from reading the tar once;
    ``samples``, the count the caller expects, is only checked against their sum (a warning).
    Raises ManifestError, also for a shard that cannot be read to count it."""
    try:
        urls = expand_pattern(pattern)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    counts = [_stats_successes(url) for url in urls]
    unknown = [i for i, n in enumerate(counts) if n is None]
    if unknown:
        log.warning("%d of %d shards of %s have no _stats.json: counting their samples by "
                    "reading each once", len(unknown), len(urls), pattern)
    for i in unknown:
        try:
            counts[i] = count_samples(urls[i])
        except Exception as exc:  # noqa: BLE001 - OSError, tarfile and webdataset errors
            raise ManifestError(f"{urls[i]}: cannot read it to count its samples: {exc}") \
                from None
    shards = [{"name": url.rsplit("/", 1)[-1].removesuffix(".tar"), "url": url,
               "successes": n} for url, n in zip(urls, counts, strict=True)]
    total = sum(counts)
    if samples is not None and samples != total:
        log.warning("%s: the shards hold %d samples, not the %d expected; every epoch reads "
                    "all %d", pattern, total, samples, total)
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "complete": True,
                "splits": {"train": {"shards": shards, "successes": total}}}
    if task:
        manifest["task"] = task
    return manifest


LABELS_DOC = (
    "'labels': names of the tags.csv rows a sample has (its tags in the index, and its rating "
    "when the index has rating rows); 'label_ids': the same as 0-based row numbers of tags.csv "
    "(row i = model output i); both in the <key>.json members and the parquet files")


def new_manifest(*, shards: dict[str, list[tuple[str, int]]], task: str, tags: dict[str, Any],
                 image: dict[str, Any], split_rule: str, selection: dict[str, Any],
                 grouping: dict[str, Any], build: dict[str, Any]) -> dict[str, Any]:
    """The body of a manifest being built, not yet complete (:func:`complete` finishes it).

    ``shards`` maps each split to its planned ``(name, samples)``; ``tags`` is the tag index
    record (file, sha256, rows, source); ``image`` the image settings (``format`` names the
    image member); ``split_rule`` says in words how posts were split; ``selection`` and
    ``grouping`` are the builder's counts; ``build`` the record a rerun must match to resume."""
    splits: dict[str, Any] = {}
    for split, planned in shards.items():
        entries = [{"name": name, "count": count} for name, count in planned]
        splits[split] = {"urls": _brace([e["name"] for e in entries], split), "shards": entries,
                         "count": sum(e["count"] for e in entries)}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "task": task,
        "tags": tags,
        "keys": f"<site>_<id>; members <key>.json and <key>.{image['format']}",
        "labels": LABELS_DOC,
        "image": image,
        "split": split_rule,
        "selection": selection,
        "grouping": grouping,
        "splits": splits,
        "build": build,
    }


def _brace(names: list[str], split: str) -> str | None:
    """``train/{00000..00009}.tar``: the split's tars as one webdataset brace pattern."""
    if not names:
        return None
    if len(names) == 1:
        return f"{split}/{names[0]}.tar"
    return f"{split}/{{{names[0]}..{names[-1]}}}.tar"


def _stats_successes(url: str) -> int | None:
    """The sample count a shard's ``<name>_stats.json`` records; None without one."""
    if not url.endswith(".tar") or url.startswith("pipe:"):
        return None
    try:
        with open_stream(url.removesuffix(".tar") + "_stats.json") as f:
            return int(json.loads(f.read())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` marked complete, with successes and bytes per shard and split
    and the status counts, from each shard's ``_stats.json``. Raises ManifestError when a
    shard's stats are missing (the shard is not done)."""
    final = json.loads(json.dumps(manifest))
    status: Counter[str] = Counter()
    for split, info in final["splits"].items():
        for entry in info["shards"]:
            path = ShardPaths.of(root / split, entry["name"]).stats
            try:
                stats = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ManifestError(f"shard {split}/{entry['name']} is not done: {exc}") from None
            entry.update(successes=stats["successes"], bytes=stats["tar_bytes"])
            status.update(stats["status"])
        info.update(successes=sum(s["successes"] for s in info["shards"]),
                    bytes=sum(s["bytes"] for s in info["shards"]))
    final.update(complete=True, status=dict(sorted(status.items())))
    return final


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Check ``manifest`` and write it as ``root/manifest.json``, atomically."""
    check_manifest(manifest, str(root / MANIFEST))
    write_json_atomic(root / MANIFEST, manifest)
