"""Hostile API fields and bodies, from a small Danbooru-shaped server: nothing escapes raw/.

    .venv/bin/python -m pytest tests/test_scrape_hostile.py -q
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from aiohttp import web
from PIL import Image
from support.scrape_runs import FAST, IMAGE_PATH, LocalServer, by_id, read_rows

from scrape.cli import main


def png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (12, 9), colour).save(out, "PNG")
    return out.getvalue()


def a_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("0.jpg", b"not really")
    return out.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PHP = b"<?php system($_GET['c']); ?>"
HTML = b"<!DOCTYPE html><html><body>Error: the file is temporarily unavailable</body></html>"
TEXT = b"just some words, not a picture"
IMAGES = {c: png(c) for c in ("red", "green", "blue", "white", "black", "gray")}
# id: (md5 field, file_ext field, path served, body, Content-Type, expected status)
POSTS = {
    10: ("../../../etc/passwd", "png", "/f/red.png", IMAGES["red"], "image/png",
         "failed_invalid_md5"),
    11: (md5(IMAGES["green"])[:31], "png", "/f/green.png", IMAGES["green"], "image/png",
         "failed_invalid_md5"),
    12: (md5(IMAGES["blue"]), "../../x", "/f/blue", IMAGES["blue"], "image/png", "downloaded"),
    13: (md5(PHP), "php", "/f/shell.php", PHP, "application/octet-stream",
         "failed_not_image"),
    14: (md5(HTML), "jpg", "/f/page.jpg", HTML, "image/jpeg", "failed_html"),
    15: (md5(TEXT), "jpg", "/f/text.jpg", TEXT, "text/plain", "failed_html"),
    16: (md5(IMAGES["white"]), "jpg", "/f/white.jpg", IMAGES["white"], "image/jpeg",
         "downloaded"),
    17: (md5(a_zip()), "jpg", "/f/archive.jpg", a_zip(), "image/jpeg", "failed_not_image"),
    18: (md5(IMAGES["gray"]), "png", "../../../etc/passwd", None, None, "failed_not_found"),
    19: (md5(IMAGES["black"]).upper(), "png", "/f/black.png", IMAGES["black"], "image/png",
         "downloaded"),
    20: ("0" * 32, "png", "/f/red-again.png", IMAGES["red"], "image/png",
         "failed_md5_mismatch"),
}


def danbooru_app(posts: dict) -> web.Application:
    """/posts.json answers every post once (a `page=b<id>` request gets []); /f/ the files."""

    async def listing(request: web.Request) -> web.Response:
        if "page" in request.query:
            return web.json_response([])
        base = f"http://{request.host}"
        out = []
        for pid, (md5_field, ext, path, *_rest) in sorted(posts.items(), reverse=True):
            url = path if "://" in path or path.startswith("..") else base + path
            out.append({"id": pid, "md5": md5_field, "file_ext": ext, "file_url": url,
                        "large_file_url": url, "rating": "g", "score": 1,
                        "tag_string": "solo 1girl", "tag_string_general": "solo 1girl",
                        "image_width": 12, "image_height": 9})
        return web.json_response(out)

    async def file(request: web.Request) -> web.Response:
        for _md5, _ext, path, body, ctype, _status in posts.values():
            if path == request.path and body is not None:
                return web.Response(body=body, content_type=ctype)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/posts.json", listing)
    app.router.add_get("/{tail:.*}", file)
    return app


def run(server: LocalServer, raw: Path) -> int:
    return main(["--site", "danbooru", "--tags", "", "--out", str(raw), "--base-url",
                 server.url, *FAST, "--retries", "1"])


def everything(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_hostile_fields_never_escape_raw_or_land_as_images(tmp_path, monkeypatch):
    raw = tmp_path / "deep" / "er" / "raw"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = everything(tmp_path)
    with LocalServer(danbooru_app(POSTS)) as server:
        assert run(server, raw) == 0
    outside = {p for p in everything(tmp_path) - before if raw not in p.parents and p != raw}
    assert outside == {tmp_path / "deep", tmp_path / "deep" / "er"}     # raw/'s parents only
    assert {p.name for p in raw.iterdir()} <= {"images", "posts", "runs", ".tmp",
                                               "state.sqlite", "state.sqlite-wal",
                                               "state.sqlite-shm"}
    rows = by_id(read_rows(raw))
    assert {pid: r["status"] for pid, r in rows.items()} == \
        {pid: spec[5] for pid, spec in POSTS.items()}
    assert rows[10]["md5"] is None and rows[11]["md5"] is None
    for pid, r in rows.items():
        assert ".." not in (r["image_path"] or "") and ".." not in (r["file_ext"] or "")
        if r["status"] == "downloaded":
            assert IMAGE_PATH.match(r["image_path"])
        elif r["status"] != "failed_invalid_md5":
            assert r["error"], pid
    assert rows[12]["file_ext"] == "png" and rows[12]["image_path"].endswith(".png")
    assert rows[16]["file_ext"] == "png"                   # a PNG behind a .jpg name
    assert rows[16]["image_path"] == f"images/{md5(IMAGES['white'])[:2]}/" \
        f"{md5(IMAGES['white'])}.png"
    assert rows[19]["md5"] == md5(IMAGES["black"])         # lowercased
    stored = [p for p in (raw / "images").rglob("*") if p.is_file()]
    assert len(stored) == 3
    for path in stored:
        data = path.read_bytes()
        assert path.name == f"{md5(data)}.png"
        with Image.open(path) as im:
            im.verify()
    assert not list((raw / ".tmp").iterdir())
    assert not list(cwd.iterdir())


def test_a_non_http_file_url_is_a_failed_post_not_a_crash(tmp_path):
    posts = {30: (md5(IMAGES["red"]), "png", "file:///etc/passwd", None, None, "failed"),
             31: (md5(IMAGES["blue"]), "png", "/f/blue.png", IMAGES["blue"], "image/png",
                  "downloaded")}
    with LocalServer(danbooru_app(posts)) as server:
        assert run(server, tmp_path) == 0
    rows = by_id(read_rows(tmp_path))
    assert rows[30]["status"].startswith("failed_") and rows[30]["error"]
    assert rows[31]["status"] == "downloaded"
