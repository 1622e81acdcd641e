"""``prep make-tag-index`` refuses bad input and bad flags with one line and exit code 2."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prep.cli import main

LIST = pa.list_(pa.string())
POSTS = [
    {"id": i, "status": "downloaded", "rating": "general", "tags": tags,
     "tags_general": general, "tags_meta": meta}
    for i, (tags, general, meta) in enumerate([
        (["1girl", "solo", "highres"], ["1girl", "solo"], ["highres"]),
        (["1girl", "smile", "commentary_request"], ["1girl", "smile"], ["commentary_request"]),
        (["1girl", "cat"], None, None),
    ])
]
SCHEMA = pa.schema([("id", pa.int64()), ("status", pa.string()), ("rating", pa.string()),
                    ("tags", LIST), ("tags_general", LIST), ("tags_meta", LIST)])


def write_posts(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["make-tag-index", "-q", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture()
def posts(tmp_path):
    return write_posts(tmp_path / "posts.parquet", POSTS)


def test_missing_tags_column(tmp_path, capsys):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [1, 2], "tag_string": ["a b", "c"]}), path)
    code, err = run(capsys, "--posts", str(path), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert err == f"prep: error: {path}: missing column 'tags' (has: id, tag_string)"
    assert not (tmp_path / "t.csv").exists()


def test_ratings_need_a_rating_column(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"tags": ["a"]}) + "\n")
    code, err = run(capsys, "--posts", str(path), "--out", str(tmp_path / "t.csv"),
                    "--include-ratings")
    assert code == 2
    assert "missing column 'rating'" in err and "\n" not in err


def test_directory_without_posts_files(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("x")
    code, err = run(capsys, "--posts", str(tmp_path / "raw"), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert "no posts files found" in err


def test_parquet_without_rows(tmp_path, capsys):
    path = write_posts(tmp_path / "empty.parquet", [])
    code, err = run(capsys, "--posts", str(path), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert err == f"prep: error: no posts in {path}"


def test_no_downloaded_posts_points_to_all_posts(tmp_path, capsys):
    rows = [dict(p, status="failed_http_404") for p in POSTS]
    path = write_posts(tmp_path / "p.parquet", rows)
    code, err = run(capsys, "--posts", str(path), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert "none of the 3 posts counts: 3 not downloaded (--all-posts counts them)" in err


def test_unreadable_files(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    code, err = run(capsys, "--posts", str(bad), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert "not a readable parquet file" in err
    text = tmp_path / "posts.csv"
    text.write_text("tags\na\n")
    code, err = run(capsys, "--posts", str(text), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert "unsupported file type" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"tags": ["a"]}\n{"tags": [\n')
    code, err = run(capsys, "--posts", str(broken), "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert "not a readable JSON-lines file" in err


def test_filters_that_leave_nothing(posts, tmp_path, capsys):
    code, err = run(capsys, "--posts", str(posts), "--out", str(tmp_path / "t.csv"),
                    "--categories", "meta")
    assert code == 2
    assert err.startswith("prep: error: no tag left to index")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-k", "-1"], "argument --top-k: must be at least 0, got -1"),
        (["--min-count", "0"], "argument --min-count: must be at least 1, got 0"),
        (["--min-tags-per-post", "many"], "expected an integer, got 'many'"),
        (["--categories", "general,colour"], "unknown tag category 'colour'"),
        (["--categories", "rating"], "use --include-ratings"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_flags(posts, tmp_path, capsys, flags, message):
    code, err = run(capsys, "--posts", str(posts), "--out", str(tmp_path / "t.csv"), *flags)
    assert code == 2
    assert message in err


def test_missing_required_flag_and_unknown_command(capsys):
    assert main(["make-tag-index", "--out", "x.csv"]) == 2
    assert "the following arguments are required: --posts" in capsys.readouterr().err
    assert main(["make-everything"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("top_k = 10\ncolour = 'blue'\n", "prep: error: {config}: colour: unknown option"),
        ("top-k = -5\n", "prep: error: {config}: top-k: must be at least 0, got -5"),
        ("all-posts = 'yes'\n", "{config}: all-posts: must be true or false"),
        ("top_k = [\n", "prep: error: cannot read --config {config}"),
        ("top_k = 2.5\n", "{config}: top_k: expected an integer, got '2.5'"),
        ("workers = 'many'\n", "{config}: workers: expected an integer, got 'many'"),
    ],
)
def test_bad_config(posts, tmp_path, capsys, text, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    code, err = run(capsys, "--config", str(config), "--posts", str(posts),
                    "--out", str(tmp_path / "t.csv"))
    assert code == 2
    assert message.format(config=config) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_schema_mismatch_between_parts_is_fine_if_tags_present(tmp_path):
    # An older part without category columns or status still counts (every row, general).
    raw = tmp_path / "raw" / "posts"
    write_posts(raw / "a.parquet", POSTS)
    pq.write_table(pa.table({"tags": pa.array([["1girl", "cat"]], pa.list_(pa.string()))}),
                   raw / "b.parquet")
    out = tmp_path / "t.csv"
    assert main(["make-tag-index", "--posts", str(raw.parent), "--out", str(out), "-q"]) == 0
    rows = out.read_text().splitlines()
    assert rows[1:] == ["-1,1girl,0,4", "-1,cat,0,2", "-1,smile,0,1", "-1,solo,0,1"]
