"""Posts files as pyarrow and pandas write them: an all-empty list column is ``list<null>``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prep.cli import main
from prep.posts_reader import tag_lists

POSTS = {
    "site": ["test"] * 3, "id": [1, 2, 3], "rating": ["general"] * 3,
    "status": ["downloaded"] * 3, "image_path": [f"images/{i}.jpg" for i in (1, 2, 3)],
    "tags": [["1girl", "solo"], ["1girl", "smile"], ["solo"]],
    "tags_general": [["1girl", "solo"], ["1girl", "smile"], ["solo"]],
    "tags_character": [[], [], []], "tags_meta": [[], [], []],
}


def _index(tmp_path: Path, name: str, table: pa.Table) -> str:
    posts = tmp_path / name / "posts"
    posts.mkdir(parents=True)
    pq.write_table(table, posts / "part-0.parquet")
    out = tmp_path / name / "tags.csv"
    assert main(["make-tag-index", "--posts", str(posts.parent), "--out", str(out), "-q"]) == 0
    return out.read_text()


def test_pandas_empty_list_columns_read_as_empty_lists_of_strings(tmp_path):
    inferred = pa.Table.from_pandas(pd.DataFrame(POSTS), preserve_index=False)
    assert inferred.schema.field("tags_character").type == pa.list_(pa.null())
    typed = pa.Table.from_pydict(POSTS, schema=inferred.schema.set(
        inferred.schema.get_field_index("tags_character"),
        pa.field("tags_character", pa.list_(pa.string()))).set(
        inferred.schema.get_field_index("tags_meta"),
        pa.field("tags_meta", pa.list_(pa.string()))))
    assert _index(tmp_path, "pandas", inferred) == _index(tmp_path, "typed", typed)


def test_tag_lists_turns_list_null_into_list_string():
    out = tag_lists(pa.array([[], None, []]))
    assert out.type == pa.list_(pa.string())
    assert out.to_pylist() == [[], None, []]
