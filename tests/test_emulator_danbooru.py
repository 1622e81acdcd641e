"""Danbooru v2 behaviour: the contract the scraper is held to (its source's behaviour)."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET

import pytest
from support.http import http_get


@pytest.fixture
def db(emulator):
    return emulator.site("danbooru")


def test_limit_is_clamped_silently_and_defaults_to_20(db):
    assert len(http_get(f"{db}/posts.json").json()) == 20
    assert len(http_get(f"{db}/posts.json?limit=500").json()) == 200
    assert len(http_get(f"{db}/posts.json?limit=0").json()) == 1
    assert len(http_get(f"{db}/posts.json?limit=junk").json()) == 1
    assert len(http_get(f"{db}/posts.json?tags=limit:7").json()) == 7


def test_default_order_is_newest_first_and_pages_are_disjoint(db):
    p1 = [p["id"] for p in http_get(f"{db}/posts.json?limit=50&page=1").json()]
    p2 = [p["id"] for p in http_get(f"{db}/posts.json?limit=50&page=2").json()]
    assert p1 == sorted(p1, reverse=True) and p2 == sorted(p2, reverse=True)
    assert p1[-1] > p2[0]


def test_numbered_pages_stop_at_1000_for_anonymous_and_5000_for_gold(db):
    r = http_get(f"{db}/posts.json?page=1001")
    assert r.status == 410
    body = r.json()
    assert body["success"] is False
    assert body["error"] == "PaginationExtension::PaginationError"
    assert body["message"] == "You cannot go beyond page 1000."
    assert http_get(f"{db}/posts.json?page=1000").json() == []
    gold = http_get(f"{db}/posts.json?page=1001&login=gold&api_key=gold-key")
    assert gold.status == 200
    assert http_get(f"{db}/posts.json?page=5001&login=gold&api_key=gold-key").status == 410


def test_b_and_a_pages_are_unlimited_and_a_pages_come_newest_first(emulator, db):
    top = emulator.world.max_id
    before = [p["id"] for p in http_get(f"{db}/posts.json?page=b{top}&limit=5").json()]
    assert before == sorted(before, reverse=True) and max(before) < top
    after = [p["id"] for p in http_get(f"{db}/posts.json?page=a100&limit=5").json()]
    assert after == sorted(after, reverse=True)
    assert min(after) > 100
    # They are the five ids just above 100, not the five newest posts.
    every = [p["id"] for p in http_get(f"{db}/posts.json?page=b{max(after) + 1}&limit=200")
             .json()]
    assert sorted(after) == sorted(i for i in every if i > 100)[:5]


def test_b_paging_reaches_every_post_past_the_page_limit(emulator, db):
    seen, page = [], f"b{emulator.world.max_id + 1}"
    while True:
        batch = http_get(f"{db}/posts.json?limit=200&page={page}").json()
        if not batch:
            break
        seen += [p["id"] for p in batch]
        page = f"b{batch[-1]['id']}"
    assert len(seen) == len(set(seen)) == emulator.world.n_posts


def test_b_paging_ignores_order_metatags(db):
    by_score = [p["id"] for p in http_get(f"{db}/posts.json?tags=order:score&limit=20").json()]
    paged = [p["id"] for p in http_get(f"{db}/posts.json?tags=order:score&page=b100000"
                                         "&limit=20").json()]
    assert by_score != sorted(by_score, reverse=True)
    assert paged == sorted(paged, reverse=True)


def test_more_than_two_counted_tags_is_422_for_anonymous_but_metatags_are_free(db):
    r = http_get(f"{db}/posts.json?tags=circle+heart+square")
    assert r.status == 422
    assert r.json()["message"] == "You cannot search for more than 2 tags at a time."
    assert http_get(f"{db}/posts.json?tags=circle+heart+rating:g+score:>0+status:any").status \
        == 200
    assert http_get(f"{db}/posts.json?tags=circle+heart+order:score").status == 422
    assert http_get(f"{db}/posts.json?tags=circle+heart+square&login=gold&api_key=gold-key")\
        .status == 200


def test_tag_search_returns_only_matching_posts(db):
    posts = http_get(f"{db}/posts.json?tags=heart+-circle&limit=100").json()
    assert posts
    for p in posts:
        tags = p["tag_string"].split()
        assert "heart" in tags and "circle" not in tags
        assert p["tag_string_general"] and "heart" in p["tag_string_general"].split()


def test_hidden_posts_are_listed_without_urls_or_md5(emulator, db):
    posts = http_get(f"{db}/posts.json?tags=status:banned&limit=50").json()
    assert posts, "the world has banned posts"
    for p in posts:
        assert p["is_banned"] is True
        for key in ("md5", "file_url", "large_file_url", "preview_file_url"):
            assert key not in p
        assert "variants" not in p["media_asset"] and "md5" not in p["media_asset"]
    safe = http_get(f"{db}/posts.json?tags=rating:e&safe_mode=true&limit=5").json()
    assert safe and all("file_url" not in p for p in safe)


def test_gold_only_posts_are_visible_to_gold_users(emulator, db):
    world = emulator.world
    restricted = next(p for p in world.scan(lambda blk: blk.cols["restricted"]))
    anon = http_get(f"{db}/posts/{restricted.id}.json").json()
    gold = http_get(f"{db}/posts/{restricted.id}.json?login=gold&api_key=gold-key").json()
    if not restricted.is_banned:
        assert "file_url" not in anon and "file_url" in gold


def test_deleted_posts_are_included_with_working_urls(db):
    posts = http_get(f"{db}/posts.json?tags=status:deleted&limit=5").json()
    assert posts and all(p["is_deleted"] is True for p in posts)
    visible = [p for p in posts if "file_url" in p]
    assert visible
    r = http_get(visible[0]["file_url"])
    assert r.status == 200 and hashlib.md5(r.body).hexdigest() == visible[0]["md5"]
    listed = {p["id"] for p in http_get(f"{db}/posts.json?limit=200").json()}
    deleted = {p["id"] for p in http_get(f"{db}/posts.json?tags=status:deleted&limit=200")
               .json()}
    assert deleted & listed or min(deleted) < min(listed)


def test_field_types_and_urls(db):
    post = next(p for p in http_get(f"{db}/posts.json?limit=50").json() if "md5" in p)
    assert isinstance(post["id"], int) and isinstance(post["score"], int)
    assert re.fullmatch(r"[0-9a-f]{32}", post["md5"])
    assert post["rating"] in {"g", "s", "q", "e"}
    assert post["source"] is not None
    md5 = post["md5"]
    assert post["file_url"].endswith(f"/original/{md5[:2]}/{md5[2:4]}/{md5}.{post['file_ext']}")
    types = [v["type"] for v in post["media_asset"]["variants"]]
    assert types[:3] == ["180x180", "360x360", "720x720"] and types[-1] == "original"
    assert post["tag_string"].split() == sorted(post["tag_string"].split())


def test_large_file_url_is_the_original_for_small_images(emulator, db):
    world = emulator.world
    small = next(p for p in world.scan(lambda blk: (blk.cols["width"] <= 850)
                                        & (blk.cols["ext"] == 0) & ~blk.cols["banned"]
                                        & ~blk.cols["restricted"]))
    post = http_get(f"{db}/posts/{small.id}.json").json()
    assert post["large_file_url"] == post["file_url"] and post["has_large"] is False


def test_large_file_url_is_a_sample_for_large_images(emulator):
    from scrape.emulator import EmulatorThread
    with EmulatorThread(seed=7, posts=200, image_scale=1.0) as big:
        world = big.world
        large = next(p for p in world.scan(lambda blk: (blk.cols["width"] > 900)
                                            & (blk.cols["ext"] == 0) & ~blk.cols["banned"]
                                            & ~blk.cols["restricted"]))
        post = http_get(f"{big.site('danbooru')}/posts/{large.id}.json").json()
        assert "/sample/" in post["large_file_url"] and "sample-" in post["large_file_url"]
        r = http_get(post["large_file_url"])
        assert r.status == 200 and r.body[:2] == b"\xff\xd8"
        import io

        from PIL import Image
        assert Image.open(io.BytesIO(r.body)).width == 850


def test_timestamps_carry_us_eastern_offsets_across_dst(emulator, db):
    offsets = set()
    for page in range(1, 4):
        for p in http_get(f"{db}/posts.json?limit=200&page={page}").json():
            offsets.add(p["created_at"][-6:])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[-+]\d\d:\d\d",
                                p["created_at"])
    assert offsets == {"-04:00", "-05:00"}


def test_auth_by_params_and_basic(db):
    half = http_get(f"{db}/posts.json?login=gold")
    assert half.status == 401 and half.json()["message"] == "Missing `login` or `api_key`"
    bad = http_get(f"{db}/posts.json?login=gold&api_key=nope")
    assert bad.status == 401 and bad.json()["message"] == "Invalid API key"
    token = base64.b64encode(b"gold:gold-key").decode()
    ok = http_get(f"{db}/posts.json?tags=a+b+c", {"Authorization": f"Basic {token}"})
    assert ok.status == 200


def test_user_agent_filter_answers_a_cloudflare_challenge(db):
    for agent in ("Mozilla/5.0 (Windows NT 10.0) Chrome/130", "python-requests/2.32",
                  "Python/3.11 aiohttp/3.14.5"):
        r = http_get(f"{db}/posts.json", {"User-Agent": agent})
        assert r.status == 403
        assert r.headers["Server"] == "cloudflare" and r.headers["cf-mitigated"] == "challenge"
        assert b"_cf_chl_opt" in r.body
    assert http_get(f"{db}/posts.json", {"User-Agent": "booru-tagger/0.1"}).status == 200


def test_cause_error_renders_the_requested_status(db):
    r = http_get(f"{db}/posts.json?cause_error=503&message=down")
    assert r.status == 503 and r.json() == {**r.json(), "success": False, "message": "down"}


def test_md5_param_returns_one_object(db):
    post = next(p for p in http_get(f"{db}/posts.json?limit=20").json() if "md5" in p)
    one = http_get(f"{db}/posts.json?md5={post['md5']}").json()
    assert isinstance(one, dict) and one["id"] == post["id"]
    assert http_get(f"{db}/posts.json?md5={'0' * 32}").status == 404


def test_counts_endpoint_matches_a_full_listing(emulator, db):
    total = http_get(f"{db}/counts/posts.json?tags=heart").json()["counts"]["posts"]
    ids, page = [], "b999999"
    while batch := http_get(f"{db}/posts.json?tags=heart&limit=200&page={page}").json():
        ids += [p["id"] for p in batch]
        page = f"b{batch[-1]['id']}"
    assert total == len(ids) > 0


def test_tags_endpoint_orders_by_count_and_filters(emulator, db):
    tags = http_get(f"{db}/tags.json?search[order]=count&limit=50").json()
    counts = [t["post_count"] for t in tags]
    assert counts == sorted(counts, reverse=True) and len(tags) == 50
    chars = http_get(f"{db}/tags.json?search[category]=4&limit=20").json()
    assert chars and all(t["category"] == 4 for t in chars)
    named = http_get(f"{db}/tags.json?search[name_comma]=heart,circle").json()
    assert {t["name"] for t in named} == {"heart", "circle"}
    assert len(http_get(f"{db}/tags.json?limit=5000").json()) == 1000


def test_blank_search_params_redirect(db):
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(f"{db}/tags.json?search[name]=&limit=2",
                                 headers={"User-Agent": "booru-tagger/0.1"})
    try:
        opener.open(req)
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 302 and "search" not in e.headers["Location"]


def test_xml_form_is_rails_to_xml(db):
    root = ET.fromstring(http_get(f"{db}/posts.xml?limit=3").body)
    assert root.tag == "posts" and root.get("type") == "array"
    post = root.find("post")
    assert post.find("id").get("type") == "integer"
    assert post.find("tag-string") is not None
    assert post.find("approver-id").get("nil") == "true"
    err = ET.fromstring(http_get(f"{db}/posts.xml?page=1001").body)
    assert err.tag == "result" and err.find("success").text == "false"


def test_a_million_post_world_answers_deep_keyset_pages_quickly():
    from scrape.emulator import EmulatorThread
    with EmulatorThread(seed=1, posts=1_000_000, image_scale=0.02) as big:
        db = big.site("danbooru")
        top = http_get(f"{db}/posts.json?limit=20").json()
        assert top[0]["id"] == big.world.max_id > 1_000_000
        deep = http_get(f"{db}/posts.json?limit=20&page=b500000").json()
        assert len(deep) == 20 and deep[0]["id"] < 500000
        assert http_get(f"{db}/posts.json?page=1001").status == 410
        assert len(big.world._cache) < 10      # only the blocks it touched were built
