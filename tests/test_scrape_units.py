"""Small parts of `scrape`: magic bytes, field checks, the token bucket, the HTTP client.

    .venv/bin/python -m pytest tests/test_scrape_units.py -q
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import time
import zipfile

import pytest
from aiohttp import web
from PIL import Image
from support.clock import FakeClock

from scrape.download import CONTENT_ATTEMPTS, ImageStore, fetch_image
from scrape.errors import FetchError, SiteError
from scrape.filetype import looks_like_html, sniff
from scrape.http import Client
from scrape.post import as_int, rating_word, safe_ext, valid_md5
from scrape.ratelimit import HostLimiter, TokenBucket

AGENT = "booru-tagger-tests/1.0"


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, fmt)
    return out.getvalue()


def zipped() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("a.txt", "a")
    return out.getvalue()


# -- magic bytes ---------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "kind"), [
    (encoded("JPEG"), "jpg"),
    (encoded("PNG"), "png"),
    (encoded("GIF"), "gif"),
    (b"GIF87a" + b"\x00" * 10, "gif"),
    (encoded("WEBP"), "webp"),
    (encoded("BMP"), "bmp"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00mif1", "avif"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "mp4"),
    (b"\x1a\x45\xdf\xa3" + b"\x00" * 12, "webm"),
    (zipped(), "zip"),
    (b"FWS\x0a" + b"\x00" * 12, "swf"),
    (b"CWS\x0a" + b"\x00" * 12, "swf"),
    (b"<!DOCTYPE html><html></html>", None),
    (b"<?php echo 1; ?>", None),
    (b"", None),
    (b"\xff\xd8", None),                        # too short to be a JPEG
])
def test_sniff(data, kind):
    assert sniff(data) == kind


@pytest.mark.parametrize(("data", "ctype", "html"), [
    (b"<!DOCTYPE html><html>", "image/jpeg", True),
    (b"  \n<html><body>", "", True),
    (b"<HTML>", "application/octet-stream", True),
    (b'<?xml version="1.0"?><error/>', "", True),
    (encoded("PNG"), "text/plain", True),       # a text/* type is never an image
    (encoded("PNG"), "image/png", False),
    (encoded("JPEG"), "", False),
])
def test_looks_like_html(data, ctype, html):
    assert looks_like_html(data, ctype) is html


# -- fields --------------------------------------------------------------------------------
def test_valid_md5():
    good = hashlib.md5(b"x").hexdigest()
    assert valid_md5(good) == good
    assert valid_md5(good.upper()) == good
    assert valid_md5(f" {good}\n") == good
    for bad in (good[:31], good + "0", "../../../etc/passwd", "g" * 32, f"{good[:30]}/x",
                "", None, 12345, ["a" * 32], "0" * 31 + "\n" + "0"):
        assert valid_md5(bad) is None, bad


def test_safe_ext():
    assert safe_ext("jpg") == "jpg" and safe_ext("JPEG") == "jpg" and safe_ext(".png") == "png"
    assert safe_ext(" webp ") == "webp" and safe_ext("mp4") == "mp4" and safe_ext("zip") == "zip"
    for bad in ("../../x", "php", "jpg/../../x", "png\x00.php", "", None, 3, "exe", "html"):
        assert safe_ext(bad) is None, bad


def test_rating_word():
    assert [rating_word(r) for r in "gsqe"] == ["general", "sensitive", "questionable",
                                                "explicit"]
    assert rating_word("Explicit") == "explicit" and rating_word(" safe ") == "general"
    assert rating_word("questionable") == "questionable"
    assert rating_word("x") is None and rating_word(None) is None and rating_word(1) is None


def test_as_int():
    assert as_int(5) == 5 and as_int("12") == 12 and as_int(3.9) == 3 and as_int("7.0") == 7
    assert as_int(True) is None and as_int("../1") is None and as_int(None) is None


# -- token bucket --------------------------------------------------------------------------
def within_bucket(times: list[float], rate: float, burst: int) -> bool:
    return all(j - i + 1 <= burst + rate * (times[j] - times[i]) + 0.01
               for i in range(len(times)) for j in range(i, len(times)))


def test_token_bucket_burst_then_rate():
    async def go() -> list[float]:
        bucket = TokenBucket(rate=20, burst=5, clock=FakeClock())
        return [await bucket.acquire() for _ in range(25)]

    times = asyncio.run(go())
    assert times[:5] == [0.0] * 5                       # the burst goes at once
    assert times[-1] == pytest.approx(1.0)              # then 20 more at 20/s
    assert times[5:] == pytest.approx([0.05 * i for i in range(1, 21)])
    assert within_bucket(times, 20, 5)


def test_token_bucket_is_shared_by_concurrent_callers():
    async def go() -> list[float]:
        bucket = TokenBucket(rate=40, burst=2, clock=FakeClock())
        times: list[float] = []

        async def caller():
            for _ in range(10):
                times.append(await bucket.acquire())

        await asyncio.gather(*(caller() for _ in range(3)))
        return sorted(times)

    times = asyncio.run(go())
    assert times[-1] == pytest.approx((30 - 2) / 40)
    assert within_bucket(times, 40, 2)


def test_token_bucket_rejects_a_zero_rate():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_host_limiter_buckets_per_host_and_none_means_unlimited():
    async def go(rate, hosts: list[str]) -> tuple[float, list[float]]:
        clock = FakeClock()
        limiter = HostLimiter(rate, 3, clock)
        for host in hosts:
            await limiter.acquire(host)
        return clock.t, clock.sleeps

    assert asyncio.run(go(None, ["a"] * 200)) == (0.0, [])
    assert asyncio.run(go(2, ["a", "a", "a", "b", "b", "b"])) == (0.0, [])
    assert asyncio.run(go(2, ["a"] * 4))[0] == pytest.approx(0.5)


# -- the HTTP client -----------------------------------------------------------------------
async def serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def answering(*replies):
    """A handler giving these replies in turn (the last one forever), counting requests."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        reply = replies[min(len(seen) - 1, len(replies) - 1)]
        if reply == "reset":                           # drop the connection, answer nothing
            request.transport.close()
            return web.Response()
        return reply()

    handler.seen = seen
    return handler


async def get_with(handler, **client_args):
    runner, url = await serve(handler)
    try:
        args = {"retries": 3, "backoff": 0.01, "timeout": 5, **client_args}
        async with Client(AGENT, **args) as client:
            return await client.get(url + "/x"), client
    finally:
        await runner.cleanup()


def ok() -> web.Response:
    return web.Response(text="fine")


def test_client_honours_retry_after_seconds():
    handler = answering(lambda: web.Response(status=429, headers={"Retry-After": "1"}), ok)
    clock = FakeClock()
    reply, client = asyncio.run(get_with(handler, clock=clock))
    assert reply.status == 200 and reply.body == b"fine"
    assert clock.sleeps == [1.0]
    assert (client.requests, client.retried) == (2, 1)


def test_client_honours_retry_after_as_a_date():
    def later() -> web.Response:
        when = email.utils.formatdate(time.time() + 2, usegmt=True)
        return web.Response(status=503, headers={"Retry-After": when})

    clock = FakeClock()
    reply, _ = asyncio.run(get_with(answering(later, ok), clock=clock))
    assert reply.status == 200
    assert len(clock.sleeps) == 1 and 0.5 <= clock.sleeps[0] <= 2.0   # whole seconds


def test_client_backs_off_without_retry_after():
    handler = answering(lambda: web.Response(status=500), lambda: web.Response(status=502), ok)
    clock = FakeClock()
    reply, _ = asyncio.run(get_with(handler, backoff=0.2, clock=clock))
    assert reply.status == 200 and len(handler.seen) == 3
    assert len(clock.sleeps) == 2                                   # full jitter: <= 0.2, 0.4
    assert 0 <= clock.sleeps[0] <= 0.2 and 0 <= clock.sleeps[1] <= 0.4


def test_client_keeps_api_and_file_hosts_on_separate_budgets():
    async def go() -> FakeClock:
        clock = FakeClock()
        client = Client(AGENT, rate=1, burst=1, file_rate=100, concurrency=2,
                        api_hosts=frozenset({"api"}), clock=clock)
        for _ in range(3):
            await client.limiter.acquire("api")                     # 1/s: 2 s of waiting
        assert clock.t == pytest.approx(2.0)
        for _ in range(10):
            await client.file_limiter.acquire("cdn")                # 100/s after a burst of 2
        assert clock.t - 2.0 == pytest.approx(0.08)
        return clock

    asyncio.run(go())


@pytest.mark.parametrize("retries", [0, 2])
def test_client_gives_up_after_its_retries(retries):
    handler = answering(lambda: web.Response(status=503))
    with pytest.raises(FetchError) as caught:
        asyncio.run(get_with(handler, retries=retries))
    assert caught.value.reason == "http_503" and caught.value.status == 503
    assert len(handler.seen) == retries + 1


def test_client_retries_connection_resets_then_gives_up():
    handler = answering("reset")
    with pytest.raises(FetchError) as caught:
        asyncio.run(get_with(handler, retries=2))
    assert caught.value.reason == "connection"
    assert 3 <= len(handler.seen) <= 6          # aiohttp may retry a dropped pooled connection
    handler = answering("reset", ok)
    reply, client = asyncio.run(get_with(handler))
    assert reply.status == 200 and client.retried <= 1


def test_client_does_not_retry_a_404():
    handler = answering(lambda: web.Response(status=404))
    reply, _ = asyncio.run(get_with(handler))
    assert reply.status == 404 and len(handler.seen) == 1


def test_a_cloudflare_challenge_is_a_site_error_at_once():
    handler = answering(lambda: web.Response(status=403, text="<html>Just a moment...</html>",
                                             headers={"cf-mitigated": "challenge"}))
    with pytest.raises(SiteError, match="Cloudflare"):
        asyncio.run(get_with(handler))
    assert len(handler.seen) == 1


def test_client_times_out_and_retries():
    """The first request is not answered until the retry arrives, so only the client's
    timeout can end it (no sleep raced against the timeout); the retry is answered at once."""
    async def go():
        retried = asyncio.Event()

        async def hang_then_answer(request: web.Request) -> web.Response:
            hang_then_answer.seen.append(time.monotonic())
            if len(hang_then_answer.seen) == 1:
                await retried.wait()
            retried.set()
            return ok()

        hang_then_answer.seen = []
        result = await asyncio.wait_for(get_with(hang_then_answer, timeout=1.0), 60)
        return result, hang_then_answer.seen

    (reply, client), seen = asyncio.run(go())
    assert reply.status == 200 and reply.body == b"fine"
    assert client.retried == len(seen) - 1 >= 1      # a loaded machine may time out the retry too


# -- fetch_image ---------------------------------------------------------------------------
async def fetch(tmp_path, body: bytes, ctype: str, md5: str, claimed: str | None,
                verify: bool = True):
    handler = answering(lambda: web.Response(body=body, content_type=ctype))
    runner, url = await serve(handler)
    try:
        async with Client(AGENT, retries=0, backoff=0.01) as client:
            try:
                return await fetch_image(client, ImageStore(tmp_path), url + "/f.jpg", md5,
                                         claimed, "original" if verify else "sample"), handler
            except FetchError as exc:
                return exc, handler
    finally:
        await runner.cleanup()


def test_fetch_image_corrects_the_extension_from_the_bytes(tmp_path):
    data = encoded("PNG")
    digest = hashlib.md5(data).hexdigest()
    saved, _ = asyncio.run(fetch(tmp_path, data, "image/jpeg", digest, "jpg"))
    assert saved.ext == "png" and saved.corrected and saved.size == len(data)
    assert saved.image_path == f"images/{digest[:2]}/{digest}.png"
    assert (tmp_path / saved.image_path).read_bytes() == data


@pytest.mark.parametrize(("body", "ctype", "reason"), [
    (b"<!DOCTYPE html><html>busy</html>", "image/jpeg", "html"),
    (encoded("PNG"), "image/png", "md5_mismatch"),
])
def test_fetch_image_retries_bad_bodies_then_fails(tmp_path, body, ctype, reason):
    error, handler = asyncio.run(fetch(tmp_path, body, ctype, "0" * 32, "jpg"))
    assert isinstance(error, FetchError) and error.reason == reason
    assert len(handler.seen) == CONTENT_ATTEMPTS
    assert not (tmp_path / "images").exists() and not list((tmp_path / ".tmp").iterdir())


def test_fetch_image_without_md5_check_keeps_a_sample(tmp_path):
    data = encoded("JPEG")
    saved, _ = asyncio.run(fetch(tmp_path, data, "image/jpeg", "0" * 32, None, verify=False))
    assert saved.image_path == f"images/00/{'0' * 32}-sample.jpg" and not saved.corrected


def test_fetch_image_refuses_a_non_image(tmp_path):
    data = zipped()
    error, handler = asyncio.run(fetch(tmp_path, data, "application/zip",
                                       hashlib.md5(data).hexdigest(), "jpg"))
    assert isinstance(error, FetchError) and error.reason == "not_image"
    assert not (tmp_path / "images").exists()
