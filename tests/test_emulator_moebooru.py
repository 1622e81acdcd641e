"""The Moebooru dialect (yande.re, konachan): listing, paging, limits, envelopes, tags, files."""

from __future__ import annotations

import hashlib
import io
import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image
from support.http import http_get

from scrape.emulator import EmulatorThread
from scrape.emulator import vocab as V
from scrape.emulator.moebooru import KONACHAN, YANDERE

POST_KEYS = [
    "id", "tags", "created_at", "updated_at", "creator_id", "approver_id", "author", "change",
    "source", "score", "md5", "file_size", "file_ext", "file_url", "is_shown_in_index",
    "preview_url", "preview_width", "preview_height", "actual_preview_width",
    "actual_preview_height", "sample_url", "sample_width", "sample_height", "sample_file_size",
    "jpeg_url", "jpeg_width", "jpeg_height", "jpeg_file_size", "rating", "is_rating_locked",
    "has_children", "parent_id", "status", "is_pending", "width", "height", "is_held",
    "frames_pending_string", "frames_pending", "frames_string", "frames", "is_note_locked",
    "last_noted_at", "last_commented_at"]
TOO_MANY = {"success": False,
            "reason": "Error: You cannot search for more than 6 tags at a time"}


def get(emulator, path: str, site: str = "yandere"):
    return http_get(emulator.site(site) + path)


def world_posts(emulator) -> list:
    world = emulator.world
    return list(world.scan(lambda blk: np.ones(len(blk.ids), bool)))


@pytest.fixture(scope="module")
def big_world():
    """More posts than the 1000 cap, with tiny images so listing them all stays quick."""
    with EmulatorThread(seed=3, posts=1100, image_scale=0.02) as emu:
        yield emu


@pytest.fixture(scope="module")
def full_size():
    """Full-size images, so large JPEG and PNG posts have samples."""
    with EmulatorThread(seed=5, posts=40, image_scale=1.0) as emu:
        yield emu


def test_post_list_is_a_bare_array_of_moebooru_posts(emulator):
    r = get(emulator, "/post.json?limit=60")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    posts = r.json()
    assert isinstance(posts, list) and len(posts) == 60
    for p in posts:
        assert [k for k in p if k != "flag_detail"] == POST_KEYS
        post = emulator.world.post(p["id"])
        assert p["tags"] == " ".join(sorted(post.tag_list))
        assert isinstance(p["created_at"], int) and p["created_at"] == int(post.created_at)
        assert isinstance(p["updated_at"], int) and p["updated_at"] >= p["created_at"]
        assert p["rating"] == {"g": "s", "s": "s", "q": "q", "e": "e"}[post.rating]
        assert p["approver_id"] is None and p["last_noted_at"] == 0
        assert p["frames"] == [] and p["frames_string"] == ""
        assert p["status"] == post.status and p["is_pending"] == (post.status == "pending")
        assert re.fullmatch(r"[0-9a-f]{32}", p["md5"])
    assert {p["rating"] for p in posts} <= {"s", "q", "e"}
    assert "s" in {p["rating"] for p in posts}
    assert get(emulator, "/post.json?tags=no_such_tag_anywhere").json() == []
    assert [p["id"] for p in get(emulator, "/post/index.json?limit=5").json()] \
        == [p["id"] for p in posts[:5]]


def test_limit_defaults_to_40_and_follows_the_limit_metatag(emulator):
    for query in ("", "?limit=0", "?limit=-3", "?limit=junk"):
        assert len(get(emulator, "/post.json" + query).json()) == 40, query
    assert len(get(emulator, "/post.json?limit=7").json()) == 7
    assert len(get(emulator, "/post.json?limit=7&tags=limit:3").json()) == 3


def test_limit_is_capped_at_1000(big_world):
    visible = sum(not p.is_deleted for p in world_posts(big_world))
    assert visible > 1000
    posts = get(big_world, "/post.json?limit=5000").json()
    assert len(posts) == 1000
    assert len(get(big_world, "/post.json?limit=1000&page=2").json()) == visible - 1000


def test_pages_are_disjoint_newest_first_and_empty_past_the_end(emulator):
    pages = [[p["id"] for p in get(emulator, f"/post.json?limit=10&page={n}").json()]
             for n in (1, 2, 3)]
    ids = [i for page in pages for i in page]
    assert len(ids) == 30 and ids == sorted(set(ids), reverse=True)
    everything = [p["id"] for p in get(emulator, "/post.json?limit=1000").json()]
    assert ids == everything[:30]
    for junk in ("0", "-4", "abc"):
        page = [p["id"] for p in get(emulator, f"/post.json?limit=10&page={junk}").json()]
        assert page == pages[0], junk
    r = get(emulator, "/post.json?limit=10&page=1000")
    assert r.status == 200 and r.json() == []


def test_offset_paging_has_no_depth_limit(emulator):
    everything = [p["id"] for p in get(emulator, "/post.json?limit=1000").json()]
    deep = get(emulator, "/post.json?limit=1&page=500")
    assert deep.status == 200 and [p["id"] for p in deep.json()] == [everything[499]]
    for page in ("1000000", "99999999999"):          # the last page there is (clamped)
        r = get(emulator, f"/post.json?limit=100&page={page}")
        assert r.status == 200 and r.json() == []


def test_deleted_posts_only_when_asked_for(emulator):
    world = world_posts(emulator)
    deleted = {p.id for p in world if p.is_deleted}
    listed = get(emulator, "/post.json?limit=1000").json()
    assert deleted and not deleted & {p["id"] for p in listed}
    assert len(listed) == len(world) - len(deleted)
    statuses = {p["status"] for p in listed}
    assert {"pending", "flagged"} <= statuses and "deleted" not in statuses
    assert all("flag_detail" in p for p in listed if p["status"] != "active")

    shown = get(emulator, "/post.json?limit=1000&tags=status:deleted").json()
    assert {p["id"] for p in shown} == deleted
    for p in shown:
        assert p["status"] == "deleted" and p["flag_detail"]["post_id"] == p["id"]
        assert not {"file_url", "sample_url", "jpeg_url"} & set(p)
        assert p["preview_url"].endswith("/yandere/deleted-preview.png")
    assert http_get(shown[0]["preview_url"]).status == 200

    one = min(deleted)
    by_id = get(emulator, f"/post.json?tags=id:{one}").json()
    assert [p["id"] for p in by_id] == [one] and "file_url" not in by_id[0]
    # Its file is gone too, even with the right md5 and name.
    post = emulator.world.post(one)
    url = f"/image/{by_id[0]['md5']}/yande.re%20{one}.{post.file_ext}"
    assert get(emulator, url).status == 404


def test_more_than_six_tags_is_a_500(emulator):
    tags = [f"tag_{i}" for i in range(7)]
    for query in ("+".join(tags), "+".join("-" + t for t in tags)):
        r = get(emulator, "/post.json?tags=" + query)
        assert r.status == 500 and r.json() == TOO_MANY, query
    six = "+".join(tags[:6] + ["-" + t for t in tags[:6]] + ["rating:s", "status:active"])
    r = get(emulator, "/post.json?tags=" + six)
    assert r.status == 200 and r.json() == []


def test_api_v2_envelope_maps_tags_to_type_names(emulator):
    data = get(emulator, "/post.json?api_version=2&include_tags=1&limit=5").json()
    assert set(data) == {"posts", "tags"} and len(data["posts"]) == 5
    for p in data["posts"]:
        post = emulator.world.post(p["id"])
        for category, names in post.tags.items():
            for name in names:
                assert data["tags"][name] == V.CATEGORY_NAMES[category]
    assert set(data["tags"].values()) >= {"general", "artist", "meta"}
    full = get(emulator, "/post.json?api_version=2&include_tags=1&include_pools=1"
                         "&include_votes=1&limit=2").json()
    assert set(full) == {"posts", "pool_posts", "pools", "tags", "votes"}
    assert full["pool_posts"] == [] and full["pools"] == [] and full["votes"] == {}
    assert set(get(emulator, "/post.json?api_version=2&limit=1").json()) == {"posts"}


def test_api_v2_is_json_only(emulator):
    r = get(emulator, "/post.xml?api_version=2&include_tags=1")
    assert r.status == 424
    root = ET.fromstring(r.body)
    assert root.tag == "response" and root.findtext("reason") == "V2 API is JSON-only"


def test_xml_posts_are_attribute_style(emulator):
    r = get(emulator, "/post.xml?limit=5&page=2")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(r.body)
    visible = sum(not p.is_deleted for p in world_posts(emulator))
    assert root.tag == "posts" and root.attrib == {"count": str(visible), "offset": "5"}
    posts = list(root)
    as_json = get(emulator, "/post.json?limit=5&page=2").json()
    assert [int(p.get("id")) for p in posts] == [p["id"] for p in as_json]
    for element, p in zip(posts, as_json, strict=True):
        assert element.tag == "post" and len(element) == 0
        assert element.get("tags") == p["tags"] and element.get("md5") == p["md5"]
        assert element.get("file_url") == p["file_url"]
        assert element.get("is_held") in {"true", "false"}
    deleted = ET.fromstring(get(emulator, "/post/index.xml?tags=status:deleted").body)
    assert len(deleted) > 0 and all(p.get("file_url") is None for p in deleted)


def test_tag_api_orders_filters_and_limits(emulator):
    counts = emulator.world.tag_counts()
    by_count = get(emulator, "/tag.json?order=count&limit=30").json()
    assert len(by_count) == 30 and set(by_count[0]) == {"id", "name", "count", "type",
                                                         "ambiguous"}
    got = [t["count"] for t in by_count]
    assert got == sorted(got, reverse=True) and got[0] == counts.max()
    for t in by_count:
        assert t["id"] == emulator.world.tag_id(t["name"]) and t["count"] == counts[t["id"] - 1]
    characters = get(emulator, "/tag.json?type=4&limit=20&order=count").json()
    assert len(characters) == 20 and {t["type"] for t in characters} == {V.CHARACTER}
    every = get(emulator, "/tag.json?limit=0").json()
    assert len(every) == len(emulator.world.vocab.names)
    assert [t["name"] for t in every] == sorted(t["name"] for t in every)   # default: name
    assert len(get(emulator, "/tag.json").json()) == 50
    contains = get(emulator, "/tag.json?name=background&limit=0").json()
    assert "white_background" in {t["name"] for t in contains}
    assert all("background" in t["name"] for t in contains)
    assert any(not t["name"].startswith("background") for t in contains)
    prefixed = get(emulator, "/tag.json?name=white*&limit=0").json()
    assert prefixed and all(t["name"].startswith("white") for t in prefixed)
    assert len(prefixed) < len([t for t in every if "white" in t["name"]])
    dated = get(emulator, "/tag.json?order=date&limit=3").json()
    assert [t["id"] for t in dated] == [len(every), len(every) - 1, len(every) - 2]


def test_file_urls_are_pretty_percent_encoded_and_truncated(emulator):
    for p in get(emulator, "/post.json?limit=20").json():
        parts = urlsplit(p["file_url"])
        folder, md5, name = parts.path.rsplit("/", 2)
        assert folder == "/yandere/image" and md5 == p["md5"]
        assert name.startswith(f"yande.re%20{p['id']}%20") and name.endswith("." + p["file_ext"])
        assert re.fullmatch(r"[A-Za-z0-9_.~%-]+", name)       # everything else is encoded
        words = unquote(name).removesuffix("." + p["file_ext"]).split(" ")
        tag_part = " ".join(words[2:])
        assert words[:2] == ["yande.re", str(p["id"])]
        assert len(tag_part) <= 150 < len(p["tags"])          # world posts have long tag lists
        assert set(words[2:]) < {t.replace("/", "_") for t in p["tags"].split()}
        assert words[2:] == sorted(words[2:])
        preview = urlsplit(p["preview_url"]).path
        if p["file_ext"] in {"jpg", "png", "gif"}:
            assert preview == f"/yandere/data/preview/{md5[:2]}/{md5[2:4]}/{md5}.jpg"
        else:
            assert preview == "/yandere/download-preview.png"


def test_downloaded_files_match_the_listed_md5(emulator):
    posts = get(emulator, "/post.json?limit=40").json()
    picked = [next(p for p in posts if p["file_ext"] == ext) for ext in ("jpg", "png")]
    for p in picked:
        r = http_get(p["file_url"])
        assert r.status == 200 and hashlib.md5(r.body).hexdigest() == p["md5"]
        assert len(r.body) == p["file_size"]
        preview = http_get(p["preview_url"])
        assert preview.status == 200 and preview.headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(preview.body)).format == "JPEG"
    wrong = picked[0]["file_url"].replace(picked[0]["md5"], picked[1]["md5"])
    assert http_get(wrong).status == 404


def test_sample_url_falls_back_to_the_original_for_small_images(emulator):
    posts = get(emulator, "/post.json?limit=40").json()
    png = next(p for p in posts if p["file_ext"] == "png")
    for p in posts:
        assert p["sample_url"] == p["jpeg_url"] == p["file_url"]
        assert (p["sample_width"], p["sample_height"], p["sample_file_size"]) \
            == (p["width"], p["height"], p["file_size"])
    assert png["sample_url"].endswith(".png")            # a sample can be the original PNG


def test_large_images_have_a_jpeg_sample(full_size):
    post = next(p for p in world_posts(full_size)
                if p.file_ext == "png" and p.width > 850 and not p.is_deleted)
    [large] = get(full_size, f"/post.json?tags=id:{post.id}").json()
    assert "/yandere/sample/" in large["sample_url"]
    assert f"yande.re%20{large['id']}%20sample%20" in large["sample_url"]
    assert large["sample_url"].endswith(".jpg") and large["sample_width"] == 850
    assert large["jpeg_url"] == large["file_url"]
    r = http_get(large["sample_url"])
    assert r.status == 200 and len(r.body) == large["sample_file_size"]
    image = Image.open(io.BytesIO(r.body))
    assert image.format == "JPEG"
    assert image.size == (large["sample_width"], large["sample_height"])


def test_konachan_names_its_files_after_itself(emulator):
    p = get(emulator, "/post.json?limit=1", site="konachan").json()[0]
    same = get(emulator, "/post.json?limit=1").json()[0]
    assert p["id"] == same["id"] and p["md5"] == same["md5"]
    assert f"/konachan/image/{p['md5']}/Konachan.com%20-%20{p['id']}%20" in p["file_url"]
    assert "/konachan/data/preview/" in p["preview_url"]
    r = http_get(p["file_url"])
    assert r.status == 200 and hashlib.md5(r.body).hexdigest() == p["md5"]
    assert http_get(p["file_url"].replace("Konachan.com", "yande.re")).status == 404
    assert KONACHAN.types[6] == "style" and "style" not in YANDERE.types.values()
    assert {"circle", "faults"} <= set(YANDERE.types.values())
    assert get(emulator, "/tag.json?limit=1", site="konachan").status == 200
