"""The emulator's Gelbooru 0.2 dapi: gelbooru.com and safebooru.org.

    .venv/bin/python -m pytest tests/test_emulator_gelbooru.py -q
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from support.http import http_get
from support.sites import dialect

from scrape.emulator import EmulatorThread
from scrape.emulator import vocab as V

TOO_DEEP = b"Too deep! Pull it back some. Holy fuck."
FIELD_TYPES = {
    "id": int, "created_at": str, "score": int, "width": int, "height": int, "md5": str,
    "directory": str, "image": str, "rating": str, "source": str, "change": int, "owner": str,
    "creator_id": int, "parent_id": int, "sample": int, "preview_height": int,
    "preview_width": int, "tags": str, "title": str, "has_notes": str, "has_comments": str,
    "file_url": str, "preview_url": str, "sample_url": str, "sample_height": int,
    "sample_width": int, "status": str, "post_locked": int, "has_children": str,
}
WORDS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}


def dapi(emulator, site: str, s: str = "post", **params):
    query = urlencode({"page": "dapi", "s": s, "q": "index", **params})
    return http_get(f"{emulator.site(site)}/index.php?{query}")


def world_ids(emulator, pred=lambda p: True) -> list[int]:
    """Every post id of the world, newest first, including deleted posts."""
    w = emulator.world
    return [p.id for p in w.scan(lambda b: np.ones(len(b.ids), bool)) if pred(p)]


@pytest.fixture(scope="module")
def gel_posts(emulator):
    """All gelbooru.com posts, listed page by page (this also fills the md5 index)."""
    out = []
    for pid in range(10):
        page = dapi(emulator, "gelbooru", json=1, limit=100, pid=pid).json().get("post", [])
        if not page:
            return out
        out += page
    raise AssertionError("more pages than the world has")


@pytest.fixture(scope="module")
def safe_posts(emulator):
    return dapi(emulator, "safebooru", json=1, limit=1000).json()


# -- gelbooru.com -------------------------------------------------------------------------------
def test_gelbooru_envelope_count_and_missing_post_key(emulator):
    raw = dapi(emulator, "gelbooru", json=1, limit=5, pid=2).body
    assert raw.startswith(b'{"@attributes":{') and b'"file_url":"http:\\/\\/' in raw   # PHP form
    body = json.loads(raw)
    assert body["@attributes"] == {"limit": 5, "offset": 10, "count": emulator.world.n_posts}
    assert len(body["post"]) <= 5 and all(isinstance(p, dict) for p in body["post"])
    none = dapi(emulator, "gelbooru", json=1, tags="no_such_tag_at_all").json()
    assert none == {"@attributes": {"limit": 100, "offset": 0, "count": 0}}


def test_gelbooru_single_post_object_knob(emulator):
    d = dialect(emulator, "gelbooru")
    d.single_post_object = True
    try:
        body = dapi(emulator, "gelbooru", json=1, limit=1).json()
        assert isinstance(body["post"], dict) and body["post"]["id"] == world_ids(emulator)[0]
    finally:
        d.single_post_object = False
    assert isinstance(dapi(emulator, "gelbooru", json=1, limit=1).json()["post"], list)


def test_gelbooru_post_fields_and_types(emulator, gel_posts):
    world = emulator.world
    assert [p["id"] for p in gel_posts] == world_ids(emulator, lambda p: not p.is_deleted)
    for p in gel_posts:
        assert list(p) == list(FIELD_TYPES)
        assert {k: type(v) for k, v in p.items()} == FIELD_TYPES, p["id"]
        post = world.post(p["id"])
        assert (p["width"], p["height"], p["score"]) == (post.width, post.height, post.score)
        assert p["rating"] == WORDS[post.rating] and p["status"] != "deleted"
        assert p["parent_id"] == (post.parent_id or 0)
        assert p["has_children"] == str(post.has_children).lower()
        assert {p["has_notes"], p["has_comments"]} <= {"true", "false"}
        assert p["source"] == html.escape(post.source) and p["title"] == ""
        created = datetime.strptime(p["created_at"], "%a %b %d %H:%M:%S %z %Y")
        assert created.utcoffset().total_seconds() in {-5 * 3600, -4 * 3600}
        assert abs(created.timestamp() - post.created_at) < 1
        md5 = p["md5"]
        assert re.fullmatch(r"[0-9a-f]{32}", md5) and p["directory"] == f"{md5[:2]}/{md5[2:4]}"
        base = emulator.site("gelbooru")
        assert p["file_url"] == f"{base}/images/{p['directory']}/{md5}.{post.file_ext}"
        assert p["preview_url"] == f"{base}/thumbnails/{p['directory']}/thumbnail_{md5}.jpg"
        assert p["post_locked"] == 0 and p["sample"] in {0, 1}
        if p["sample"]:
            assert p["sample_url"].endswith(f"/samples/{p['directory']}/sample_{md5}.jpg")
            assert p["sample_width"] == 850 and p["sample_height"] > 0
        else:
            assert (p["sample_url"], p["sample_width"], p["sample_height"]) == ("", 0, 0)
    assert {p["has_notes"] for p in gel_posts} == {p["has_comments"] for p in gel_posts} \
        == {"true", "false"}
    assert any(p["parent_id"] for p in gel_posts)


def test_gelbooru_video_image_name_differs_from_file_url(emulator, gel_posts):
    videos = [p for p in gel_posts if p["file_url"].endswith(".mp4")]
    assert videos
    for p in videos:
        assert p["image"] == f"{p['md5']}.webm" and p["sample_url"] == ""
    still = [p for p in gel_posts if p["file_url"].endswith(".png")]
    assert all(p["image"] == p["file_url"].rsplit("/", 1)[1] for p in still)


def test_tags_are_html_escaped(emulator):
    awkward = [t for t in V.AWKWARD_GENERAL if "'" in t or "&" in t]
    escaped = [html.escape(t).replace("&#x27;", "&#039;") for t in awkward]
    tags = dapi(emulator, "gelbooru", "tag", json=1, names=" ".join(escaped)).json()["tag"]
    assert {html.unescape(t["name"]) for t in tags} == set(awkward)
    unescaped = dapi(emulator, "gelbooru", "tag", json=1, names=" ".join(awkward)).json()
    assert "tag" not in unescaped          # the tag API knows names only in their stored form
    assert all("'" not in t["name"] and ("&#039;" in t["name"] or "&amp;" in t["name"])
               for t in tags)
    used = [html.unescape(t["name"]) for t in sorted(tags, key=lambda t: -t["count"])
            if t["count"] > 0]
    quote = next(t for t in used if "'" in t)
    amp = next(t for t in used if "&" in t)
    for name in (quote, amp):
        posts = dapi(emulator, "gelbooru", json=1, tags=name).json()["post"]
        for p in posts:
            assert html.escape(name).replace("&#x27;", "&#039;") in p["tags"].split()
            assert name not in p["tags"].split() and name in html.unescape(p["tags"]).split()
    safe = dapi(emulator, "safebooru", json=1, tags=quote).json()
    assert safe and all("&#039;" in p["tags"] for p in safe)


def test_limit_cap_and_default(emulator):
    assert 90 <= len(dapi(emulator, "gelbooru", json=1, limit=101).json()["post"]) <= 100
    body = dapi(emulator, "gelbooru", json=1, limit=5000).json()
    assert body["@attributes"]["limit"] == 100 and len(body["post"]) <= 100
    assert len(dapi(emulator, "gelbooru", json=1).json()["post"]) <= 100
    n_general = len(world_ids(emulator, lambda p: p.rating == "g" and not p.is_deleted))
    assert n_general > 150
    assert len(dapi(emulator, "safebooru", json=1).json()) <= 100
    assert len(dapi(emulator, "safebooru", json=1, limit=5000).json()) == n_general
    # The cap is exactly 1000: 1001 * 20 is capped to offset 20000, 1000 * 21 is too deep.
    assert dapi(emulator, "safebooru", limit=1001, pid=20).body != TOO_DEEP
    assert dapi(emulator, "safebooru", limit=1000, pid=21).body == TOO_DEEP


def test_pid_pages_disjoint_descending_and_short(emulator):
    every = world_ids(emulator)
    deleted = set(world_ids(emulator, lambda p: p.is_deleted))
    sizes = []
    for pid in range(4):
        ids = [p["id"] for p in dapi(emulator, "gelbooru", json=1, limit=50, pid=pid)
               .json()["post"]]
        assert ids == [i for i in every[pid * 50:(pid + 1) * 50] if i not in deleted]
        sizes.append(len(ids))
    assert min(sizes[:-1]) < 50                     # a short page that is not the last


def test_too_deep_both_sites(emulator):
    for site, limit, pid in (("gelbooru", 100, 201), ("gelbooru", 5000, 201),
                             ("safebooru", 1000, 21), ("safebooru", 500, 41)):
        r = dapi(emulator, site, json=1, limit=limit, pid=pid)
        assert (r.status, r.body) == (200, TOO_DEEP)
        assert r.headers["Content-Type"].startswith("text/html")
    edge = dapi(emulator, "gelbooru", json=1, limit=100, pid=200).json()   # offset 20000
    assert edge == {"@attributes": {"limit": 100, "offset": 20000, "count": 600}}


def test_keyset_id_below_and_ascending(emulator):
    every = world_ids(emulator)
    deleted = set(world_ids(emulator, lambda p: p.is_deleted))
    below = every[250]
    body = dapi(emulator, "gelbooru", json=1, limit=100, tags=f"id:<{below}").json()
    assert body["@attributes"]["count"] == len(every) - 251
    ids = [p["id"] for p in body["post"]]
    assert ids == [i for i in every[251:351] if i not in deleted]
    ascending = dapi(emulator, "gelbooru", json=1, limit=20, tags=f"sort:id:asc id:>{below}")
    ids = [p["id"] for p in ascending.json()["post"]]
    assert ids == sorted(ids) and ids[0] > below and ids[0] == min(every[:250])


def test_gelbooru_xml_elements(emulator):
    r = dapi(emulator, "gelbooru", limit=7, pid=1)
    assert r.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(r.body)
    assert root.tag == "posts"
    assert root.attrib == {"limit": "7", "offset": "7", "count": "600"}
    posts = root.findall("post")
    as_json = dapi(emulator, "gelbooru", json=1, limit=7, pid=1).json()["post"]
    assert [int(p.findtext("id")) for p in posts] == [p["id"] for p in as_json]
    first = {child.tag: child.text or "" for child in posts[0]}
    assert list(first) == list(FIELD_TYPES) and posts[0].attrib == {}
    assert first["tags"] == as_json[0]["tags"] and first["has_children"] in {"true", "false"}
    empty = ET.fromstring(dapi(emulator, "gelbooru", tags="no_such_tag_at_all").body)
    assert empty.attrib["count"] == "0" and len(empty) == 0


def test_gelbooru_auth_401(emulator):
    emu = emulator.emulator
    emu.gelbooru_auth = "401"
    try:
        assert dapi(emulator, "gelbooru", json=1, limit=1).status == 401
        assert dapi(emulator, "gelbooru", json=1, limit=1, user_id=1234).status == 401
        assert dapi(emulator, "gelbooru", json=1, limit=1, user_id=1234,
                    api_key="wrong").status == 401
        assert dapi(emulator, "gelbooru", "tag", json=1, limit=1).status == 401
        ok = dapi(emulator, "gelbooru", json=1, limit=1, user_id=1234, api_key="gelbooru-key")
        assert ok.status == 200 and len(ok.json()["post"]) == 1
        assert dapi(emulator, "safebooru", json=1, limit=1).status == 200
    finally:
        emu.gelbooru_auth = "off"
    assert dapi(emulator, "gelbooru", json=1, limit=1).status == 200


def test_gelbooru_auth_xml_error_even_for_json(emulator):
    emu = emulator.emulator
    emu.gelbooru_auth = "xml"
    try:
        r = dapi(emulator, "gelbooru", json=1, limit=1)
        ok = dapi(emulator, "gelbooru", json=1, limit=1, user_id=1234, api_key="gelbooru-key")
    finally:
        emu.gelbooru_auth = "off"
    assert r.status == 200 and r.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.body)
    root = ET.fromstring(r.body)
    assert root.tag == "response" and root.attrib["success"] == "false"
    assert root.attrib["reason"].startswith("Search error: Please use your API key.")
    assert ok.status == 200 and "post" in ok.json()


def test_post_by_id(emulator, gel_posts):
    pid = gel_posts[3]["id"]
    assert [p["id"] for p in dapi(emulator, "gelbooru", json=1, id=pid).json()["post"]] == [pid]
    gone = world_ids(emulator, lambda p: p.is_deleted)[0]
    assert "post" not in dapi(emulator, "gelbooru", json=1, id=gone).json()
    explicit = world_ids(emulator, lambda p: p.rating == "e" and not p.is_deleted)[0]
    assert dapi(emulator, "safebooru", json=1, id=explicit).body == b""
    general = world_ids(emulator, lambda p: p.rating == "g" and not p.is_deleted)[0]
    assert dapi(emulator, "safebooru", json=1, id=general).json()[0]["id"] == general


# -- safebooru.org ------------------------------------------------------------------------------
def test_safebooru_json_form(emulator, safe_posts, gel_posts):
    world = emulator.world
    md5 = {p["id"]: p["md5"] for p in gel_posts}
    assert isinstance(safe_posts, list)
    assert [p["id"] for p in safe_posts] == world_ids(
        emulator, lambda p: p.rating == "g" and not p.is_deleted)
    base = emulator.site("safebooru")
    for p in safe_posts:
        post = world.post(p["id"])
        assert "created_at" not in p and "md5" not in p and p["rating"] == "general"
        assert p["hash"] == md5[p["id"]]
        assert re.fullmatch(r"[0-9a-f]{40}\.\w+", p["image"]) and p["image"][:32] != p["hash"]
        assert isinstance(p["directory"], int) and p["directory"] == p["id"] // 1000 + 1
        assert isinstance(p["sample"], bool) and isinstance(p["has_notes"], bool)
        assert isinstance(p["comment_count"], int) and isinstance(p["parent_id"], int)
        assert p["score"] == (post.score or None)
        stem = p["image"].rsplit(".", 1)[0]
        assert p["file_url"] == f"{base}/images/{p['directory']}/{p['image']}"
        assert p["preview_url"] == \
            f"{base}/thumbnails/{p['directory']}/thumbnail_{stem}.jpg?{p['id']}"
        sample = f"{base}/samples/{p['directory']}/sample_{stem}.jpg?{p['id']}"
        assert p["sample_url"] == (sample if p["sample"] else p["file_url"])
    assert any(p["score"] is None for p in safe_posts)
    assert {p["has_notes"] for p in safe_posts} == {True, False}


def test_safebooru_without_file_url(emulator):
    d = dialect(emulator, "safebooru")
    d.include_file_url = False
    try:
        posts = dapi(emulator, "safebooru", json=1, limit=3).json()
    finally:
        d.include_file_url = True
    assert len(posts) == 3
    assert all(not {"file_url", "sample_url", "preview_url"} & set(p) for p in posts)
    assert all({"directory", "image", "hash"} <= set(p) for p in posts)
    assert "file_url" in dapi(emulator, "safebooru", json=1, limit=1).json()[0]


def test_safebooru_zero_results_empty_body(emulator):
    r = dapi(emulator, "safebooru", json=1, tags="no_such_tag_at_all")
    assert (r.status, r.body) == (200, b"")
    r = dapi(emulator, "safebooru", json=1, tags="rating:explicit")
    assert (r.status, r.body) == (200, b"")
    root = ET.fromstring(dapi(emulator, "safebooru", tags="no_such_tag_at_all").body)
    assert root.attrib == {"count": "0", "offset": "0"} and len(root) == 0


def test_safebooru_spurious_empty_page_then_real_page(emulator):
    d = dialect(emulator, "safebooru")
    d.spurious_empty = 1.0
    try:
        first = dapi(emulator, "safebooru", json=1, limit=20, pid=2)
        retry = dapi(emulator, "safebooru", json=1, limit=20, pid=2)
        page0 = dapi(emulator, "safebooru", json=1, limit=20, pid=0)
        xml_first = ET.fromstring(dapi(emulator, "safebooru", limit=20, pid=3).body)
    finally:
        d.spurious_empty = 0.0
    assert (first.status, first.body) == (200, b"")
    assert len(retry.json()) > 10 and len(page0.json()) > 10        # pid 0 never spurious
    assert len(xml_first) == 0 and int(xml_first.attrib["count"]) > 60


def test_safebooru_xml_attributes(emulator, safe_posts):
    r = dapi(emulator, "safebooru", limit=1000)
    root = ET.fromstring(r.body)
    n_general = len(world_ids(emulator, lambda p: p.rating == "g"))
    assert root.tag == "posts" and root.attrib == {"count": str(n_general), "offset": "0"}
    posts = root.findall("post")
    assert [int(p.attrib["id"]) for p in posts] == [p["id"] for p in safe_posts]
    for el, js in zip(posts, safe_posts, strict=True):
        a = el.attrib
        assert len(el) == 0 and a["md5"] == js["hash"]
        assert a["tags"].startswith(" ") and a["tags"].endswith(" ")
        assert a["tags"].strip() == js["tags"]
        assert a["parent_id"] == (str(js["parent_id"]) if js["parent_id"] else "")
        datetime.strptime(a["created_at"], "%a %b %d %H:%M:%S %z %Y")
        assert a["has_notes"] == str(js["has_notes"]).lower()
    assert any(p.attrib["parent_id"] == "" for p in posts)


def test_safebooru_limit_default_and_pages(emulator, safe_posts):
    pages = [dapi(emulator, "safebooru", json=1, pid=pid).json() for pid in range(2)]
    ids = [p["id"] for page in pages for p in page]
    assert len(pages[0]) <= 100 and len(set(ids)) == len(ids)
    assert ids == [p["id"] for p in safe_posts][:len(ids)]


# -- tag API ---------------------------------------------------------------------------------
def test_tag_api_gelbooru(emulator):
    vocab, counts = emulator.world.vocab, emulator.world.tag_counts()
    names = "white_background circle original"
    tags = dapi(emulator, "gelbooru", "tag", json=1, names=names).json()["tag"]
    assert sorted(t["name"] for t in tags) == sorted(names.split())
    for t in tags:
        i = vocab.index(t["name"])
        assert (t["id"], t["count"], t["type"]) == (i + 1, counts[i], vocab.categories[i])
        assert t["ambiguous"] == 0
    assert {t["type"] for t in tags} == {V.GENERAL, V.COPYRIGHT}
    top = dapi(emulator, "gelbooru", "tag", json=1, orderby="count", order="DESC",
               limit=20).json()
    assert top["@attributes"]["limit"] == 20 and len(top["tag"]) == 20
    got = [t["count"] for t in top["tag"]]
    assert got == sorted(got, reverse=True) and got[0] == counts.max()
    like = dapi(emulator, "gelbooru", "tag", json=1, name_pattern="%_backgroun_",
                limit=1000).json()["tag"]
    assert {t["name"] for t in like} == {n for n in vocab.names if n.endswith("_background")}
    after = dapi(emulator, "gelbooru", "tag", json=1, after_id=100, limit=5).json()["tag"]
    assert [t["id"] for t in after] == [101, 102, 103, 104, 105]
    none = dapi(emulator, "gelbooru", "tag", json=1, name="no_such_tag_at_all").json()
    assert "tag" not in none and none["@attributes"]["count"] == 0
    xml_root = ET.fromstring(dapi(emulator, "gelbooru", "tag", name="circle").body)
    assert xml_root.find("tag").findtext("name") == "circle"


def test_tag_api_safebooru(emulator):
    i = emulator.world.vocab.index("white_background")
    root = ET.fromstring(dapi(emulator, "safebooru", "tag", name="white_background").body)
    (tag,) = root.findall("tag")
    assert tag.attrib["name"] == "white_background" and tag.attrib["id"] == str(i + 1)
    general = [p for p in emulator.world.scan(lambda b: np.ones(len(b.ids), bool))
               if p.rating == "g" and "white_background" in p.tag_list]
    assert int(tag.attrib["count"]) == len(general) < emulator.world.tag_counts()[i]
    assert dapi(emulator, "safebooru", "tag", json=1, name="no_such_tag_at_all").body == b""


# -- files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large():
    """A few posts at half size: wide enough for samples (the session world has none)."""
    with EmulatorThread(seed=3, posts=40, image_scale=0.5) as emu:
        yield emu


def test_samples_listed_and_served_at_their_size(large):
    post = next(p for p in large.world.scan(lambda b: np.ones(len(b.ids), bool))
                if p.has_sample and p.file_ext in {"jpg", "png"} and p.rating == "g"
                and not p.is_deleted)
    gel = dapi(large, "gelbooru", json=1, id=post.id).json()["post"][0]
    safe = dapi(large, "safebooru", json=1, id=post.id).json()[0]
    assert (gel["sample"], safe["sample"]) == (1, True)
    size = (850, round(post.height * 850 / post.width))
    assert (gel["sample_width"], gel["sample_height"]) == size
    assert (safe["sample_width"], safe["sample_height"]) == size
    for url in (gel["sample_url"], safe["sample_url"]):
        r = http_get(url)
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert abs(Image.open(io.BytesIO(r.body)).height - size[1]) <= 1
        assert Image.open(io.BytesIO(r.body)).width == 850
    thumb = Image.open(io.BytesIO(http_get(gel["preview_url"]).body))
    assert thumb.size == (gel["preview_width"], gel["preview_height"])


def test_gelbooru_files_md5_preview_and_range(emulator, gel_posts):
    post = next(p for p in gel_posts if p["file_url"].endswith((".png", ".jpg")))
    r = http_get(post["file_url"])
    assert r.status == 200 and hashlib.md5(r.body).hexdigest() == post["md5"]
    thumb = http_get(post["preview_url"])
    assert thumb.status == 200 and thumb.body[:3] == b"\xff\xd8\xff"
    part = http_get(post["file_url"], headers={"Range": "bytes=10-29"})
    assert part.status == 206 and part.body == r.body[10:30]
    assert part.headers["Content-Range"] == f"bytes 10-29/{len(r.body)}"
    no_sample = next(p for p in gel_posts if not p["sample"])
    sample_like = no_sample["preview_url"].replace("/thumbnails/", "/samples/") \
        .replace("thumbnail_", "sample_")
    assert http_get(sample_like).status == 404
    d = post["directory"]
    assert http_get(post["file_url"].replace(f"/{d}/", "/00/00/")).status == 404


def test_safebooru_files_hash_and_buckets(emulator, safe_posts):
    post = next(p for p in safe_posts if p["file_url"].endswith((".png", ".jpg")))
    r = http_get(post["file_url"])
    assert r.status == 200 and hashlib.md5(r.body).hexdigest() == post["hash"]
    thumb = http_get(post["preview_url"])
    assert thumb.status == 200 and thumb.body[:3] == b"\xff\xd8\xff"
    part = http_get(post["file_url"], headers={"Range": "bytes=-16"})
    assert part.status == 206 and part.body == r.body[-16:]
    elsewhere = post["file_url"].replace(f"/images/{post['directory']}/",
                                         f"/images/{post['directory'] + 1}/")
    assert http_get(elsewhere).status == 404
