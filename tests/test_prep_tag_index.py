"""``prep make-tag-index`` end to end on small hand-built posts files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prep.cli import main

ROOT = Path(__file__).resolve().parent.parent
LIST = pa.list_(pa.string())
SCHEMA = pa.schema(
    [("site", pa.string()), ("id", pa.int64()), ("rating", pa.string()),
     ("status", pa.string()), ("image_path", pa.string()), ("tags", LIST),
     ("tags_general", LIST), ("tags_character", LIST), ("tags_copyright", LIST),
     ("tags_artist", LIST), ("tags_meta", LIST)]
)


def post(pid, tags, rating="general", status="downloaded", **cats):
    """One posts-parquet row; category lists default to null (site does not say)."""
    row = {"site": "test", "id": pid, "rating": rating, "status": status, "tags": tags,
           "image_path": f"images/{pid}.jpg" if status == "downloaded" else None}
    for name in ("general", "character", "copyright", "artist", "meta"):
        row[f"tags_{name}"] = cats.get(name)
    return row


# Counted (downloaded) posts: 1, 2, 3, 5, 6. Post 4 is metadata only. Posts 5 and 6 come from a
# site without categories; hatsune_miku still ends up a character thanks to posts 1 and 2.
POSTS = [
    post(1, ["1girl", "solo", "long_hair", "hatsune_miku", "vocaloid", "highres"],
         general=["1girl", "solo", "long_hair"], character=["hatsune_miku"],
         copyright=["vocaloid"], artist=[], meta=["highres"]),
    post(2, ["1girl", "long_hair", "smile", "hatsune_miku", "artist_a"], rating="sensitive",
         general=["1girl", "long_hair", "smile"], character=["hatsune_miku"], copyright=[],
         artist=["artist_a"], meta=[]),
    post(3, ["1girl", "smile", "solo", "commentary_request"], rating="explicit",
         general=["1girl", "smile", "solo"], character=[], copyright=[], artist=[],
         meta=["commentary_request"]),
    post(4, ["1girl", "smile", "dog"], status="skipped_filtered"),
    post(5, ["2girls", "smile"], rating="questionable"),
    post(6, ["solo", "hatsune_miku"]),
]
EXPECTED = [
    ("-1", "1girl", "0", "3"),
    ("-1", "hatsune_miku", "4", "3"),
    ("-1", "smile", "0", "3"),
    ("-1", "solo", "0", "3"),
    ("-1", "long_hair", "0", "2"),
    ("-1", "2girls", "0", "1"),
]


def write_posts(path: Path, rows, schema=SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def read_csv(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [tuple(r) for r in csv.reader(fh)]
    assert rows[0] == ("tag_id", "name", "category", "count")
    return rows[1:]


def run(tmp_path: Path, *flags: str, posts=None) -> tuple[int, Path]:
    src = posts or write_posts(tmp_path / "raw" / "posts" / "part-00000.parquet", POSTS).parents[1]
    out = tmp_path / "out" / "tags.csv"
    code = main(["make-tag-index", "--posts", str(src), "--out", str(out), "-q", *flags])
    return code, out


def report_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".report.json").read_text())


def test_exact_output_report_and_plot(tmp_path):
    code, out = run(tmp_path)
    assert code == 0
    assert read_csv(out) == EXPECTED
    report = report_of(out)
    assert report["posts"]["read"] == 6
    assert report["posts"]["counted"] == 5
    assert report["posts"]["skipped_status"] == 1
    assert report["tags"]["seen"] == 10
    assert report["tags"]["kept"] == 6
    assert report["tags"]["kept_by_category"] == {"general": 5, "character": 1}
    assert report["tags"]["dropped"] == {"category": 4, "excluded": 0, "min_count": 0,
                                         "top_k": 0}
    assert report["settings"]["top_k"] == 5000
    assert report["settings"]["categories"] == ["general", "character"]
    assert "highres" in report["settings"]["exclude"]
    png = out.with_name("tags.report.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_tie_order_and_cut_at_top_k(tmp_path):
    code, out = run(tmp_path, "--top-k", "2")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["1girl", "hatsune_miku"]
    report = report_of(out)
    assert report["cut"] == {"last_kept_name": "hatsune_miku", "last_kept_count": 3,
                             "first_dropped_count": 3, "ties_dropped": 2}
    assert report["tags"]["dropped"]["top_k"] == 4


def test_coverage_numbers(tmp_path):
    code, out = run(tmp_path, "--top-k", "2")
    assert code == 0
    report = report_of(out)
    # posts 1, 2, 3 (1girl) and 6 (hatsune_miku) have a kept tag; post 5 does not
    assert report["posts"]["with_kept_tag"] == 4
    assert report["coverage"]["posts"] == pytest.approx(4 / 5)
    # 19 tag occurrences on counted posts, 15 of eligible tags, 6 of kept ones
    assert report["occurrences"] == {"total": 19, "eligible": 15, "kept": 6}
    assert report["coverage"]["occurrences"] == pytest.approx(6 / 19, abs=1e-6)
    assert report["coverage"]["eligible_occurrences"] == pytest.approx(6 / 15)


def test_all_posts_counts_metadata_only_posts(tmp_path):
    code, out = run(tmp_path, "--all-posts")
    assert code == 0
    assert read_csv(out)[:2] == [("-1", "1girl", "0", "4"), ("-1", "smile", "0", "4")]
    assert ("-1", "dog", "0", "1") in read_csv(out)
    assert report_of(out)["posts"]["counted"] == 6


def test_every_category_with_default_exclusions_off(tmp_path):
    code, out = run(tmp_path, "--categories", "general,character,copyright,artist,meta",
                    "--no-default-exclude")
    assert code == 0
    assert read_csv(out)[5:] == [
        ("-1", "2girls", "0", "1"),
        ("-1", "artist_a", "1", "1"),
        ("-1", "commentary_request", "5", "1"),
        ("-1", "highres", "5", "1"),
        ("-1", "vocaloid", "3", "1"),
    ]


def test_categories_select_one_category_by_name_or_code(tmp_path):
    code, out = run(tmp_path, "--categories", "4")
    assert code == 0
    assert read_csv(out) == [("-1", "hatsune_miku", "4", "3")]
    code, out = run(tmp_path, "--categories", "copyright, artist")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["artist_a", "vocaloid"]


def test_default_exclusions_drop_meta_tags(tmp_path):
    code, out = run(tmp_path, "--categories", "general,meta")
    assert code == 0
    names = [r[1] for r in read_csv(out)]
    assert "highres" not in names and "commentary_request" not in names
    assert report_of(out)["tags"]["dropped"]["excluded"] == 2


def test_exclude_comma_list_and_file(tmp_path):
    code, out = run(tmp_path, "--exclude", "smile, solo")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["1girl", "hatsune_miku", "long_hair", "2girls"]
    listing = tmp_path / "exclude.txt"
    listing.write_text("# my list\n1girl\n\nlong_hair\n")
    code, out = run(tmp_path, "--exclude", str(listing), "--exclude", "2girls")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["hatsune_miku", "smile", "solo"]


def test_rating_labels_come_first(tmp_path):
    code, out = run(tmp_path, "--include-ratings", "--top-k", "1")
    assert code == 0
    assert read_csv(out) == [
        ("9999999", "general", "9", "2"),
        ("9999999", "sensitive", "9", "1"),
        ("9999999", "questionable", "9", "1"),
        ("9999999", "explicit", "9", "1"),
        ("-1", "1girl", "0", "3"),
    ]
    assert report_of(out)["tags"]["rating_labels"] == 4


def test_min_count(tmp_path):
    code, out = run(tmp_path, "--min-count", "3")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["1girl", "hatsune_miku", "smile", "solo"]
    assert report_of(out)["tags"]["dropped"]["min_count"] == 2


def test_min_tags_per_post(tmp_path):
    code, out = run(tmp_path, "--min-tags-per-post", "3")
    assert code == 0
    assert read_csv(out) == [
        ("-1", "1girl", "0", "3"),
        ("-1", "hatsune_miku", "4", "2"),
        ("-1", "long_hair", "0", "2"),
        ("-1", "smile", "0", "2"),
        ("-1", "solo", "0", "2"),
    ]
    assert report_of(out)["posts"]["skipped_min_tags"] == 2


def test_top_k_larger_than_available_warns(tmp_path, capsys):
    code = main(["make-tag-index", "--posts",
                 str(write_posts(tmp_path / "p.parquet", POSTS)),
                 "--out", str(tmp_path / "tags.csv"), "--top-k", "50"])
    assert code == 0
    captured = capsys.readouterr()
    assert "--top-k 50 exceeds the 6 tags available" in captured.err
    assert "coverage: 100.00% of counted posts" in captured.out


def test_multi_part_input_matches_single_file(tmp_path):
    raw = tmp_path / "raw"
    write_posts(raw / "posts" / "part-00000.parquet", POSTS[:2])
    write_posts(raw / "posts" / "part-00001.parquet", POSTS[2:4])
    write_posts(raw / "posts" / "part-00002.parquet", POSTS[4:])
    (raw / "state.sqlite").write_bytes(b"not posts")
    code, out = run(tmp_path, posts=raw)
    assert code == 0
    assert read_csv(out) == EXPECTED
    assert report_of(out)["posts"]["read"] == 6


def test_many_row_groups_and_small_batches(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(POSTS * 50, schema=SCHEMA), path, row_group_size=7)
    code, out = run(tmp_path, "--batch-size", "3", "--workers", "3", posts=path)
    assert code == 0
    assert read_csv(out) == [(i, n, c, str(int(k) * 50)) for i, n, c, k in EXPECTED]


def test_json_lines_input(tmp_path):
    path = tmp_path / "dump.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in POSTS))
    code, out = run(tmp_path, posts=path)
    assert code == 0
    assert read_csv(out) == EXPECTED


def test_json_lines_dump_with_tag_strings_and_no_status(tmp_path):
    # A booru metadata dump: space-separated tags, no categories, no status column.
    path = tmp_path / "dump.ndjson"
    rows = [{"id": 1, "tags": "1girl solo highres"}, {"id": 2, "tags": " 1girl  smile "},
            {"id": 3, "tags": ""}, {"id": 4, "tags": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = run(tmp_path, posts=path)
    assert code == 0
    # every row counts; highres is general here but excluded by default
    assert read_csv(out) == [("-1", "1girl", "0", "2"), ("-1", "smile", "0", "1"),
                             ("-1", "solo", "0", "1")]
    report = report_of(out)
    assert report["posts"]["counted"] == 4
    assert report["coverage"]["posts"] == pytest.approx(2 / 4)


def test_config_file_values_and_flag_override(tmp_path):
    config = tmp_path / "prep.toml"
    config.write_text('top-k = 3\ncategories = ["general"]\nexclude = ["1girl"]\n')
    code, out = run(tmp_path, "--config", str(config))
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["smile", "solo", "long_hair"]
    code, out = run(tmp_path, "--config", str(config), "--top-k", "1")
    assert code == 0
    assert [r[1] for r in read_csv(out)] == ["smile"]
    # required options and switches can come from the file too
    out = tmp_path / "from-config.csv"
    config.write_text(f'posts = "{tmp_path / "raw"}"\nout = "{out}"\ninclude_ratings = true\n'
                      "top_k = 1\n")
    assert main(["make-tag-index", "--config", str(config), "-q"]) == 0
    assert [r[1] for r in read_csv(out)] == [
        "general", "sensitive", "questionable", "explicit", "1girl"]
    assert report_of(out)["settings"]["include_ratings"] is True


def test_python_dash_m_prep(tmp_path):
    src = write_posts(tmp_path / "raw" / "posts" / "part-00000.parquet", POSTS).parents[1]
    out = tmp_path / "tags.csv"
    done = subprocess.run(
        [sys.executable, "-m", "prep", "make-tag-index", "--posts", str(src), "--out", str(out),
         "--top-k", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [r[1] for r in read_csv(out)] == ["1girl", "hatsune_miku", "smile"]
    assert "posts: 6 read, 5 counted" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "prep", "make-tag-index", "--posts", str(tmp_path / "nope"),
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"prep: error: {tmp_path / 'nope'}: "
                                               "no such file or directory"]
