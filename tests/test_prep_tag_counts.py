"""Tag counting details: category votes, partial categories, tag column shapes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prep.posts_reader import plan_units, tag_lists
from prep.tag_counts import COUNT_COLUMNS, CountSettings, count_covered_posts, count_tags

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


def write_posts(path: Path, rows, schema=SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def counted(path, **settings):
    units = plan_units([path], COUNT_COLUMNS, ["tags"])
    result = count_tags(units, CountSettings(**settings))
    table = {r.name: (r.category, r.count) for r in result.tags.itertuples()}
    return table, result, units


def test_category_is_the_majority_vote(tmp_path):
    rows = [
        post(1, ["kirin"], general=["kirin"]),
        post(2, ["kirin"], character=["kirin"]),
        post(3, ["kirin"], character=["kirin"]),
        post(4, ["tie"], general=["tie"]),
        post(5, ["tie"], copyright=["tie"]),
        post(6, ["kirin", "tie"]),  # no categories: counts, does not vote
    ]
    table, result, _ = counted(write_posts(tmp_path / "p.parquet", rows))
    assert table == {"kirin": (4, 4), "tie": (3, 3)}  # tie: copyright wins over general
    assert result.category_conflicts == 2


def test_partial_categories_still_count_every_tag(tmp_path):
    # The site names only the artist: the other tags are counted from `tags`, as general.
    rows = [post(1, ["a", "b", "painter"], artist=["painter"]),
            post(2, ["a", "painter"], general=["a"], artist=["painter"]),
            post(3, ["b"], general=["b"], meta=[])]
    table, result, _ = counted(write_posts(tmp_path / "p.parquet", rows))
    assert table == {"a": (0, 2), "b": (0, 2), "painter": (1, 2)}
    assert result.category_conflicts == 0


def test_tally_of_posts_and_ratings(tmp_path):
    rows = [post(1, ["a"], rating="explicit"), post(2, ["a", "b"], rating="safe"),
            post(3, ["a"], status=None), post(4, [], status="downloaded"),
            post(5, None, status="downloaded")]
    _, result, _ = counted(write_posts(tmp_path / "p.parquet", rows))
    tally = result.posts
    assert (tally.read, tally.counted, tally.skipped_status) == (5, 4, 1)
    assert tally.ratings == {"general": 2, "sensitive": 0, "questionable": 0, "explicit": 1}
    assert tally.unrated == 1  # rating "safe" is not one of the four labels
    _, result, _ = counted(write_posts(tmp_path / "p.parquet", rows), min_tags_per_post=1)
    assert (result.posts.counted, result.posts.skipped_min_tags) == (2, 2)


def test_covered_posts_respects_post_filters(tmp_path):
    rows = [post(1, ["a", "b"]), post(2, ["b"]), post(3, ["a"], status="skipped_x"),
            post(4, ["c"])]
    path = write_posts(tmp_path / "p.parquet", rows)
    _, _, units = counted(path)
    assert count_covered_posts(units, ["a"], CountSettings()) == 1
    assert count_covered_posts(units, ["a"], CountSettings(all_posts=True)) == 2
    assert count_covered_posts(units, ["a", "c"], CountSettings()) == 2
    assert count_covered_posts(units, [], CountSettings()) == 0


def test_other_arrow_layouts_of_the_tags_column(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({
        "tags": pa.array([["x", None, "y"], ["x"], None], pa.large_list(pa.large_string())),
        "status": ["downloaded"] * 3,
    })
    pq.write_table(table, path)
    table_counts, result, _ = counted(path)
    assert table_counts == {"x": (0, 2), "y": (0, 1)}
    assert result.posts.counted == 3


def test_tag_lists_normalises_strings_and_nulls():
    lists = tag_lists(pa.array([" a  b\tc ", "", None, "d"]))
    assert lists.to_pylist() == [["a", "b", "c"], [], None, ["d"]]
    lists = tag_lists(pa.array([["a", None], None, []], pa.list_(pa.string())))
    assert lists.to_pylist() == [["a"], None, []]
    assert tag_lists(pa.nulls(2)).to_pylist() == [None, None]



def test_one_letter_ratings_count_as_their_labels(tmp_path):
    import json

    from prep.cli import main
    path = tmp_path / "dump.jsonl"
    path.write_text("".join(json.dumps({"tags": ["a"], "rating": r}) + "\n" for r in "gsqeg"))
    assert main(["make-tag-index", "--posts", str(path), "--out", str(tmp_path / "t.csv"),
                 "--include-ratings", "-q"]) == 0
    rows = (tmp_path / "t.csv").read_text().splitlines()
    counts = {r.split(",")[1]: int(r.split(",")[3]) for r in rows[1:]}
    assert counts["general"] == 2 and counts["explicit"] == 1
