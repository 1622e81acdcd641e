"""Details of real API answers the emulator reproduces on demand, and how `scrape` reads them.

    .venv/bin/python -m pytest tests/test_scrape_real_answers.py -q

A Konachan post without `file_ext`, a tag listed twice (a real Gelbooru 0.2 site), gelbooru.com
JSON from before 2021 (the md5 in `hash`), and a tag API that knows names only in the
HTML-escaped form the post API lists them in.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from support.http import http_get
from support.scrape_runs import (
    CATEGORY,
    IMAGE_EXTS,
    by_id,
    check_images,
    log_since,
    read_rows,
    scrape,
    stored_ext,
    world_posts,
)
from support.sites import QUERY, dialect, listed_by

from scrape.emulator import vocab as V


def test_konachan_posts_have_no_file_ext_and_rows_take_it_from_the_url(emulator, tmp_path):
    listed = http_get(emulator.site("konachan") + "/post.json?limit=20").json()
    assert listed and all("file_ext" not in p for p in listed)
    assert all("file_ext" in p for p in
               http_get(emulator.site("yandere") + "/post.json?limit=5").json())
    assert scrape(emulator, "konachan", QUERY, tmp_path) == 0
    rows = by_id(read_rows(tmp_path))
    want = {p.id: p for p in listed_by("konachan", world_posts(emulator.world, QUERY))}
    assert set(rows) == set(want)
    for pid, r in rows.items():
        post = want[pid]
        assert r["file_ext"] == (stored_ext(post) if r["status"] == "downloaded"
                                 else post.file_ext), pid
        assert r["status"] == ("downloaded" if post.file_ext in IMAGE_EXTS
                               else "skipped_not_image")
    check_images(tmp_path, list(rows.values()))


def test_a_tag_listed_twice_is_kept_once_in_order(emulator, tmp_path):
    d = dialect(emulator, "gelbooru")
    d.repeat_tag = True
    try:
        page = http_get(emulator.site("gelbooru") + "/index.php?page=dapi&s=post&q=index"
                        "&json=1&limit=3&tags=" + QUERY).json()["post"]
        assert all(p["tags"].split()[0] == p["tags"].split()[-1] for p in page)
        assert scrape(emulator, "gelbooru", QUERY, tmp_path, "--metadata-only") == 0
    finally:
        d.repeat_tag = False
    rows = by_id(read_rows(tmp_path))
    want = {p.id: p for p in listed_by("gelbooru", world_posts(emulator.world, QUERY))}
    assert set(rows) == set(want)
    for pid, r in rows.items():
        assert r["tags"] == [html.unescape(t) for t in want[pid].tag_list]   # once, in order
        for name, cat in CATEGORY.items():
            assert sorted(r[f"tags_{name}"]) == want[pid].tags[cat]


def test_gelbooru_json_before_2021_has_its_md5_in_hash(emulator, tmp_path):
    d = dialect(emulator, "gelbooru")
    d.legacy_hash = True
    try:
        page = http_get(emulator.site("gelbooru") + "/index.php?page=dapi&s=post&q=index"
                        "&json=1&limit=3").json()["post"]
        assert all("md5" not in p and len(p["hash"]) == 32 for p in page)
        assert scrape(emulator, "gelbooru", QUERY, tmp_path) == 0
    finally:
        d.legacy_hash = False
    rows = read_rows(tmp_path)
    want = listed_by("gelbooru", world_posts(emulator.world, QUERY))
    assert len(rows) == len(want)
    assert not [r for r in rows if r["status"] == "failed_invalid_md5"]
    assert sum(r["status"] == "downloaded" for r in rows) == sum(
        p.file_ext in IMAGE_EXTS for p in want)
    check_images(tmp_path, rows)


def test_tag_lookups_send_the_escaped_names_the_tag_api_knows(emulator, tmp_path):
    """The emulator's tag API, like the sites', finds `&gt;_&lt;` and not `>_<`."""
    awkward = [t for t in V.AWKWARD_GENERAL if set(t) & set("'&<>")]
    used = [t for t in awkward if world_posts(emulator.world, t)]
    assert used
    tag = used[0]
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "gelbooru", tag, tmp_path, "--metadata-only") == 0
    sent = set()
    for e in log_since(emulator, n0):
        q = parse_qs(e["query"])
        if q.get("s") == ["tag"]:
            sent |= set(q["names"][0].split())
    escaped = html.escape(tag).replace("&#x27;", "&#039;")
    assert escaped in sent and tag not in sent
    rows = read_rows(tmp_path)
    assert rows and all(tag in r["tags_general"] for r in rows)
    want = {p.id: p for p in listed_by("gelbooru", world_posts(emulator.world, tag))}
    for r in rows:
        for name, cat in CATEGORY.items():
            assert sorted(r[f"tags_{name}"]) == want[r["id"]].tags[cat]
