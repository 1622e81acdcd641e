"""make-shards split across machines (--num-nodes/--node-rank) and joined by merge-shards."""

from __future__ import annotations

import json

from prep.cli import main


def _raw(tmp_path):
    from scrape.cli import main as scrape
    from scrape.emulator import EmulatorThread
    raw = tmp_path / "raw"
    with EmulatorThread(seed=5, posts=90, image_scale=0.1) as emu:
        assert scrape(["--site", "danbooru", "--tags", "", "--out", str(raw), "--base-url",
                       emu.site("danbooru"), "--rate", "0", "-q"]) == 0
    assert main(["make-tag-index", "--posts", str(raw), "--out", str(tmp_path / "tags.csv"),
                 "-q"]) == 0
    return raw


def _shards(raw, tags, out, *extra):
    return main(["make-shards", "--posts", str(raw), "--tags", str(tags), "--out", str(out),
                 "--image-size", "32", "--samples-per-shard", "10", "--val-fraction", "0.2",
                 "--workers", "1", "-q", *extra])


def test_parts_built_on_three_nodes_merge_into_the_single_node_dataset(tmp_path):
    raw, tags = _raw(tmp_path), tmp_path / "tags.csv"
    assert _shards(raw, tags, tmp_path / "whole") == 0
    parts = [tmp_path / f"part-{k}" for k in range(3)]
    for k, part in enumerate(parts):
        assert _shards(raw, tags, part, "--num-nodes", "3", "--node-rank", str(k)) == 0
    built = [sorted(p.name for p in part.rglob("*.tar")) for part in parts]
    assert all(built) and sum(map(len, built)) == len(list((tmp_path / "whole").rglob("*.tar")))
    # A missing part is refused.
    assert main(["merge-shards", "--parts", str(parts[0]), str(parts[1]), "--out",
                 str(tmp_path / "bad"), "-q"]) == 2
    assert main(["merge-shards", "--parts", *map(str, parts), "--out",
                 str(tmp_path / "merged"), "-q"]) == 0
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert merged["splits"] == whole["splits"] and merged["status"] == whole["status"]
    for tar in (tmp_path / "whole").rglob("*.tar"):
        twin = tmp_path / "merged" / tar.relative_to(tmp_path / "whole")
        assert twin.read_bytes() == tar.read_bytes()
    assert (tmp_path / "merged" / "tags.csv").read_bytes() == \
        (tmp_path / "whole" / "tags.csv").read_bytes()


def test_node_rank_out_of_range_is_a_usage_error(tmp_path, capsys):
    code = main(["make-shards", "--posts", str(tmp_path), "--tags", str(tmp_path / "t.csv"),
                 "--out", str(tmp_path / "o"), "--num-nodes", "2", "--node-rank", "2"])
    assert code == 2 and "--node-rank must be in 0..1" in capsys.readouterr().err
