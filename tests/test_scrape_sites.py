"""`scrape` against every emulated site: the right posts, rows, tags and files; pagination.

    .venv/bin/python -m pytest tests/test_scrape_sites.py -q
"""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from PIL import Image
from support.scrape_runs import (
    CATEGORY,
    IMAGE_EXTS,
    SCHEMA,
    WORDS,
    by_id,
    check_images,
    file_gets,
    image_files,
    log_since,
    md5_of,
    read_rows,
    read_table,
    scrape,
    stored_ext,
    world_posts,
)
from support.sites import QUERY, dialect, listed_by

import scrape.emulator.gelbooru as gelbooru_emulator
import scrape.sites.gelbooru as gelbooru_adapter
from scrape.emulator import EmulatorThread, FaultConfig
from scrape.sites import SITES as ADAPTERS
from scrape.sites.gelbooru import Safebooru

SITES = list(ADAPTERS)         # every site the scraper has an adapter for
def expected_status(site: str, post) -> str:
    if site == "danbooru":
        if post.is_deleted:
            return "skipped_deleted"
        if post.is_banned:
            return "skipped_banned"
        if post.restricted:                             # gold-only: no URL for anonymous
            return "skipped_hidden"
    return "downloaded" if post.file_ext in IMAGE_EXTS else "skipped_not_image"


def expected_rating(site: str, post) -> str:
    if site in {"yandere", "konachan"} and post.rating in {"g", "s"}:
        return "general"                                # Moebooru's `s` is "safe"
    return WORDS[post.rating]


def listing(entries: list[dict], site: str) -> list[dict]:
    """The post-listing requests among log entries, each with its parsed query."""
    out = []
    for e in entries:
        q = {k: v[0] for k, v in parse_qs(e["query"], keep_blank_values=True).items()}
        if e["path"] in {f"/{site}/posts.json", f"/{site}/post.json"} or (
                e["path"] == f"/{site}/index.php" and q.get("s") == "post"):
            out.append({**e, "q": q})
    return out


# -- every site ----------------------------------------------------------------------------
@pytest.mark.parametrize("site", SITES)
def test_a_search_scrapes_exactly_the_matching_posts(emulator, tmp_path, site):
    raw = tmp_path / "raw"
    n0 = emulator.emulator.log.total
    assert scrape(emulator, site, QUERY, raw) == 0
    table = read_table(raw)
    assert {f.name: f.type for f in table.schema if f.name in SCHEMA} == SCHEMA
    rows = by_id(table.to_pylist())
    want = {p.id: p for p in listed_by(site, world_posts(emulator.world, QUERY))}
    assert set(rows) == set(want) and len(want) > 15
    assert {r["site"] for r in rows.values()} == {site}
    for pid, r in rows.items():
        post = want[pid]
        assert r["status"] == expected_status(site, post), pid
        assert (r["width"], r["height"]) == (post.width, post.height)
        assert r["rating"] == expected_rating(site, post)
        assert r["score"] == (post.score or None if site == "safebooru" else post.score)
        assert r["source"] == (post.source or None)
        if site == "safebooru":                          # its JSON has no created_at
            assert r["created_at"] is None
        else:
            precision = 0.002 if site == "danbooru" else 1.0     # ms or s in the API
            assert abs(r["created_at"].timestamp() - post.created_at) < precision
            assert r["created_at"].utcoffset().total_seconds() == 0
        assert sorted(r["tags"]) == post.tag_list
        for name, cat in CATEGORY.items():
            assert sorted(r[f"tags_{name}"]) == post.tags[cat], (pid, name)
        if r["status"] == "downloaded":
            assert r["file_ext"] == stored_ext(post) and r["error"] is None
            assert r["file_url"].startswith(emulator.site(site) + "/")
            if site in {"danbooru", "yandere", "konachan"}:
                assert r["file_size"] == (raw / r["image_path"]).stat().st_size
    assert any(r["tags_character"] for r in rows.values())
    assert any(r["tags_artist"] for r in rows.values())
    check_images(raw, list(rows.values()))
    downloaded = [r for r in rows.values() if r["status"] == "downloaded"]
    assert len(file_gets(log_since(emulator, n0))) == len(downloaded)
    assert all(e["agent"].startswith("booru-tagger/") for e in log_since(emulator, n0))


def test_mislabeled_files_are_stored_under_their_real_type(emulator, tmp_path):
    """A PNG listed as .jpg (or the reverse) is stored with the extension of its bytes."""
    mislabeled = [p for p in world_posts(emulator.world) if p.mislabeled and not p.is_deleted]
    assert mislabeled
    post = mislabeled[0]
    assert scrape(emulator, "yandere", f"id:{post.id}", tmp_path) == 0
    (row,) = read_rows(tmp_path)
    assert row["status"] == "downloaded" and row["file_ext"] == stored_ext(post)
    assert row["image_path"].endswith("." + stored_ext(post))
    with Image.open(tmp_path / row["image_path"]) as im:
        assert im.format == {"png": "PNG", "jpg": "JPEG"}[stored_ext(post)]


def test_safebooru_without_file_urls_builds_them_from_directory_and_image(emulator, tmp_path):
    d = dialect(emulator, "safebooru")
    d.include_file_url = False
    try:
        assert scrape(emulator, "safebooru", QUERY, tmp_path) == 0
    finally:
        d.include_file_url = True
    rows = read_rows(tmp_path)
    want = listed_by("safebooru", world_posts(emulator.world, QUERY))
    assert {r["id"] for r in rows} == {p.id for p in want}
    assert sum(r["status"] == "downloaded" for r in rows) == sum(
        p.file_ext in IMAGE_EXTS for p in want)
    check_images(tmp_path, rows)


def test_gelbooru_single_post_object(emulator, tmp_path):
    post = next(p for p in world_posts(emulator.world, QUERY)
                if not p.is_deleted and p.file_ext in IMAGE_EXTS)
    d = dialect(emulator, "gelbooru")
    d.single_post_object = True
    try:
        assert scrape(emulator, "gelbooru", f"id:{post.id}", tmp_path) == 0
    finally:
        d.single_post_object = False
    (row,) = read_rows(tmp_path)
    assert row["id"] == post.id and row["status"] == "downloaded"



@pytest.mark.parametrize("tag", ["light_o'_lantern", "tom_&_jerry_(style)"])
@pytest.mark.parametrize("site", SITES)
def test_awkward_tag_names_survive_the_round_trip(emulator, tmp_path, site, tag):
    """Quotes and ampersands: in the search, in the listing (HTML-escaped by gelbooru), in rows."""
    assert scrape(emulator, site, tag, tmp_path, "--metadata-only") == 0
    rows = by_id(read_rows(tmp_path))
    want = {p.id: p for p in listed_by(site, world_posts(emulator.world, tag))}
    assert set(rows) == set(want) and (want or site == "safebooru")
    for pid, r in rows.items():
        assert tag in r["tags_general"]
        assert sorted(r["tags"]) == want[pid].tag_list
        for name, cat in CATEGORY.items():
            assert sorted(r[f"tags_{name}"]) == want[pid].tags[cat]


# -- pagination ----------------------------------------------------------------------------
def test_danbooru_pages_by_b_id_never_by_number(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", "", tmp_path, "--metadata-only") == 0
    ids = [p.id for p in world_posts(emulator.world)]
    pages = [e["q"].get("page") for e in listing(log_since(emulator, n0), "danbooru")]
    assert pages == [None, f"b{ids[199]}", f"b{ids[399]}", f"b{ids[599]}"]
    assert sorted(r["id"] for r in read_rows(tmp_path)) == sorted(ids)



def test_danbooru_order_id_pages_upwards_by_a_id(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", "order:id", tmp_path, "--metadata-only") == 0
    ids = sorted(p.id for p in world_posts(emulator.world))
    pages = [e["q"].get("page") for e in listing(log_since(emulator, n0), "danbooru")]
    assert pages == ["a0", f"a{ids[199]}", f"a{ids[399]}", f"a{ids[599]}"]
    assert sorted(r["id"] for r in read_rows(tmp_path)) == ids


def test_danbooru_other_orders_page_by_number(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", f"{QUERY} order:score", tmp_path, "--metadata-only") == 0
    pages = [e["q"].get("page") for e in listing(log_since(emulator, n0), "danbooru")]
    assert pages == ["1", "2"]
    assert {r["id"] for r in read_rows(tmp_path)} == {
        p.id for p in world_posts(emulator.world, QUERY)}

@pytest.mark.parametrize("site", ["danbooru", "gelbooru", "safebooru", "yandere"])
def test_a_result_of_exactly_two_pages(emulator, tmp_path, monkeypatch, site):
    """A search matching exactly 2 pages: every post once, no page fetched twice."""
    world = emulator.world
    size = {"danbooru": 200, "gelbooru": 100, "safebooru": 100, "yandere": 100}[site]
    if site == "safebooru":
        monkeypatch.setattr(Safebooru, "page_size", 100)
    # The posts a site pages over: safebooru only has general posts; the rest page over every
    # post with an `id:` search (deleted ones included; gelbooru drops them from its pages).
    paged = [p for p in world_posts(world) if site != "safebooru" or p.rating == "g"]
    cut = sorted(p.id for p in paged)[2 * size - 1]
    n0 = emulator.emulator.log.total
    assert scrape(emulator, site, f"id:<={cut}", tmp_path, "--metadata-only") == 0
    matching = [p for p in paged if p.id <= cut]
    assert len(matching) == 2 * size
    want = matching if site in {"danbooru", "yandere"} else [
        p for p in matching if not p.is_deleted]
    rows = by_id(read_rows(tmp_path))
    assert set(rows) == {p.id for p in want}
    requests = listing(log_since(emulator, n0), site)
    key = "pid" if site in {"gelbooru", "safebooru"} else "page"
    keys = [e["q"].get(key) for e in requests]
    if site == "gelbooru":                               # the count says when to stop
        assert keys == ["0", "1"]
    elif site == "safebooru":                            # an empty page ends it (retried)
        assert keys[:3] == ["0", "1", "2"] and set(keys[3:]) <= {"2"}
    elif site == "danbooru":
        ids = sorted((p.id for p in matching), reverse=True)
        assert keys == [None, f"b{ids[199]}", f"b{ids[399]}"]
    else:
        assert keys == ["1", "2", "3"]


@pytest.mark.parametrize("site", ["safebooru", "gelbooru"])
def test_a_spurious_empty_page_midway_is_retried(emulator, tmp_path, monkeypatch, site):
    if site == "safebooru":
        monkeypatch.setattr(Safebooru, "page_size", 100)     # several pages from 300 posts
    d = dialect(emulator, site)
    d.spurious_empty = 1.0                              # every later page: empty at first
    n0 = emulator.emulator.log.total
    try:
        assert scrape(emulator, site, "", tmp_path, "--metadata-only") == 0
    finally:
        d.spurious_empty = 0.0
    want = listed_by(site, world_posts(emulator.world))
    assert {r["id"] for r in read_rows(tmp_path)} == {p.id for p in want}
    pids = [e["q"]["pid"] for e in listing(log_since(emulator, n0), site)]
    assert pids.count("0") == 1 and pids.count("1") >= 2 and pids.count("2") >= 2


def test_gelbooru_switches_to_id_keyset_at_the_offset_limit(emulator, tmp_path, monkeypatch):
    monkeypatch.setattr(gelbooru_adapter, "MAX_OFFSET", 300)
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "gelbooru", "", tmp_path, "--metadata-only") == 0
    want = listed_by("gelbooru", world_posts(emulator.world))
    assert {r["id"] for r in read_rows(tmp_path)} == {p.id for p in want}
    requests = listing(log_since(emulator, n0), "gelbooru")
    by_offset = [e["q"]["pid"] for e in requests if "id:<" not in e["q"]["tags"]]
    keyset = [e["q"] for e in requests if "id:<" in e["q"]["tags"]]
    assert by_offset == ["0", "1", "2"]
    assert keyset and all(q["pid"] == "0" for q in keyset)
    third_page = [p.id for p in world_posts(emulator.world)[200:300] if not p.is_deleted]
    assert keyset[0]["tags"] == f"id:<{min(third_page)}"


def test_gelbooru_too_deep_answer_goes_on_by_keyset(emulator, tmp_path, monkeypatch):
    monkeypatch.setattr(gelbooru_emulator, "MAX_OFFSET", 250)     # the site's own limit
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "gelbooru", "", tmp_path, "--metadata-only") == 0
    want = listed_by("gelbooru", world_posts(emulator.world))
    assert {r["id"] for r in read_rows(tmp_path)} == {p.id for p in want}
    requests = listing(log_since(emulator, n0), "gelbooru")
    assert [e["q"]["pid"] for e in requests if "id:<" not in e["q"]["tags"]] == \
        ["0", "1", "2", "3"]                            # pid 3 (offset 300) is "Too deep"
    assert sum("id:<" in e["q"]["tags"] for e in requests) >= 3


def test_limit_stops_after_n_posts(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", "", tmp_path, "--metadata-only", "--limit", "250") == 0
    ids = [p.id for p in world_posts(emulator.world)][:250]
    rows = read_rows(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert len(listing(log_since(emulator, n0), "danbooru")) == 2


# Danbooru pages are full (hidden posts are listed); Gelbooru drops deleted posts from a page,
# so its first page may hold fewer than 100 and a limit of 100 rightly needs a second one.
@pytest.mark.parametrize(("site", "limit"), [("danbooru", "200"), ("yandere", "100")])
def test_a_limit_at_a_page_boundary_fetches_no_further_page(emulator, tmp_path, site, limit):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, site, "", tmp_path, "--metadata-only", "--limit", limit) == 0
    assert len(read_rows(tmp_path)) == int(limit)
    assert len(listing(log_since(emulator, n0), site)) == 1


def test_limit_with_downloads(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "konachan", QUERY, tmp_path, "--limit", "12") == 0
    rows = read_rows(tmp_path)
    want = listed_by("konachan", world_posts(emulator.world, QUERY))[:12]
    assert [r["id"] for r in sorted(rows, key=lambda r: -r["id"])] == [p.id for p in want]
    entries = log_since(emulator, n0)
    assert len(file_gets(entries)) == sum(r["status"] == "downloaded" for r in rows)
    assert len(listing(entries, "konachan")) == 1
    check_images(tmp_path, rows)


# -- resume and dedupe ---------------------------------------------------------------------
def test_rerunning_a_finished_job_downloads_nothing(emulator, tmp_path):
    assert scrape(emulator, "danbooru", QUERY, tmp_path) == 0
    parts = sorted((tmp_path / "posts").iterdir())
    rows = read_rows(tmp_path)
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", QUERY, tmp_path) == 0
    assert file_gets(log_since(emulator, n0)) == []
    assert sorted((tmp_path / "posts").iterdir()) == parts
    assert sorted(read_rows(tmp_path), key=lambda r: r["id"]) == \
        sorted(rows, key=lambda r: r["id"])


def test_two_queries_into_one_raw_share_the_dedupe(emulator, tmp_path):
    a, b = "nunudochi_hozune", "zuro_sugo_(nunudochi_hozune)"
    assert scrape(emulator, "danbooru", a, tmp_path) == 0
    first = by_id(read_rows(tmp_path))
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", b, tmp_path) == 0
    rows = by_id(read_rows(tmp_path))                   # by_id: (site, id) unique
    world_b = world_posts(emulator.world, b)
    assert set(rows) == set(first) | {p.id for p in world_b}
    new = [p for p in world_b if p.id not in first]
    assert len(new) < len(world_b)                      # the queries overlap
    gets = file_gets(log_since(emulator, n0))
    assert len(gets) == len(set(gets)) == sum(
        expected_status("danbooru", p) == "downloaded" for p in new)
    check_images(tmp_path, list(rows.values()))


def test_another_site_reuses_files_already_on_disk(emulator, tmp_path):
    """The emulated sites share one world, so the same md5s: yande.re downloads nothing."""
    assert scrape(emulator, "danbooru", QUERY, tmp_path) == 0
    files = image_files(tmp_path)
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "yandere", QUERY, tmp_path) == 0
    assert file_gets(log_since(emulator, n0)) == []
    rows = read_rows(tmp_path)
    assert len({(r["site"], r["id"]) for r in rows}) == len(rows)
    dan = {r["id"]: r for r in rows if r["site"] == "danbooru"}
    yan = [r for r in rows if r["site"] == "yandere" and r["status"] == "downloaded"]
    assert yan and image_files(tmp_path) == files
    for r in yan:
        if dan.get(r["id"], {}).get("status") == "downloaded":
            assert r["image_path"] == dan[r["id"]]["image_path"]
        else:
            assert (tmp_path / r["image_path"]).exists()


# -- filters and variants ------------------------------------------------------------------
def test_metadata_only_writes_rows_and_downloads_nothing(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    assert scrape(emulator, "gelbooru", QUERY, tmp_path, "--metadata-only") == 0
    rows = read_rows(tmp_path)
    want = {p.id: p for p in listed_by("gelbooru", world_posts(emulator.world, QUERY))}
    assert {r["id"] for r in rows} == set(want)
    for r in rows:
        status = expected_status("gelbooru", want[r["id"]])
        assert r["status"] == ("metadata_only" if status == "downloaded" else status)
        assert r["image_path"] is None
    assert image_files(tmp_path) == set()
    assert file_gets(log_since(emulator, n0)) == []


def test_ratings_and_min_score_filter(emulator, tmp_path):
    assert scrape(emulator, "danbooru", QUERY, tmp_path, "--ratings", "general,sensitive",
                  "--min-score", "2") == 0
    rows = read_rows(tmp_path)
    want = [p for p in world_posts(emulator.world, QUERY)
            if p.rating in {"g", "s"} and p.score >= 2]
    assert 0 < len(want) < len(world_posts(emulator.world, QUERY))
    assert {r["id"] for r in rows} == {p.id for p in want}
    assert all(r["rating"] in {"general", "sensitive"} and r["score"] >= 2 for r in rows)
    check_images(tmp_path, rows)



# -- samples -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_images():
    """A small world at 0.6 scale: about half its posts are wider than 850 px and have samples."""
    with EmulatorThread(seed=3, posts=30, image_scale=0.6) as emu:
        yield emu


def sample_paths(emu, post) -> tuple[str, str]:
    """Danbooru's original and sample paths of a post (what the fault hash is taken over)."""
    md5 = emu.emulator.store.md5(post)
    folder = f"{md5[:2]}/{md5[2:4]}"
    return (f"/danbooru/original/{folder}/{md5}.{post.file_ext}",
            f"/danbooru/sample/{folder}/sample-{md5}.jpg")


def assert_is_sample(raw, row) -> None:
    path = raw / row["image_path"]
    assert row["file_ext"] == "jpg" and md5_of(path) != row["md5"]
    assert row["variant"] == "sample" and path.name == f"{row['md5']}-sample.jpg"
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.width == 850


@pytest.mark.parametrize("site", ["danbooru", "gelbooru", "yandere"])
def test_variant_sample_downloads_the_sample(big_images, tmp_path, site):
    assert scrape(big_images, site, "", tmp_path, "--variant", "sample") == 0
    rows = by_id(read_rows(tmp_path))
    posts = {p.id: p for p in world_posts(big_images.world)}
    assert set(rows) == set(posts)
    with_sample = [pid for pid, p in posts.items() if p.has_sample]
    assert 0 < len(with_sample) < len(posts)
    for pid, r in rows.items():
        assert r["status"] == "downloaded"
        if pid in with_sample:
            assert_is_sample(tmp_path, r)
            assert "/sample" in r["file_url"]
        else:
            assert md5_of(tmp_path / r["image_path"]) == r["md5"]
            assert r["file_ext"] == stored_ext(posts[pid])


def test_a_missing_original_falls_back_to_its_sample(big_images, tmp_path):
    faults = big_images.faults
    posts = world_posts(big_images.world)
    paths = {p.id: sample_paths(big_images, p) for p in posts}

    def outcome(config, p):
        original, sample = paths[p.id]
        if not config.hits("not_found", original, 1):
            return "original"
        if p.has_sample and not config.hits("not_found", sample, 1):
            return "sample"
        return "failed_not_found"

    for seed in range(200):
        config = FaultConfig(not_found=0.5, attempts=0, seed=seed)
        outcomes = {p.id: outcome(config, p) for p in posts}
        if set(outcomes.values()) == {"original", "sample", "failed_not_found"}:
            break
    assert set(outcomes.values()) == {"original", "sample", "failed_not_found"}
    faults.update({"not_found": 0.5, "attempts": 0, "seed": seed})
    try:
        assert scrape(big_images, "danbooru", "", tmp_path) == 0
    finally:
        faults.__dict__.update(FaultConfig().__dict__)
    rows = by_id(read_rows(tmp_path))
    for pid, r in rows.items():
        if outcomes[pid] == "failed_not_found":
            assert r["status"] == "failed_not_found" and r["error"] and not r["image_path"]
        elif outcomes[pid] == "sample":
            assert r["status"] == "downloaded"
            assert r["file_url"].endswith(paths[pid][1])
            assert_is_sample(tmp_path, r)
        else:
            assert r["status"] == "downloaded" and r["file_url"].endswith(paths[pid][0])
            assert md5_of(tmp_path / r["image_path"]) == r["md5"]
