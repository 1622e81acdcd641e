"""Fault injection, rate limits, the request log and the file server."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from support.http import AGENT, http_get

from scrape.emulator import EmulatorThread, FaultConfig
from scrape.emulator.faults import TokenBucket


def _file_post(emulator):
    posts = http_get(f"{emulator.site('danbooru')}/posts.json?limit=50").json()
    return next(p for p in posts if "file_url" in p and p["file_ext"] in {"jpg", "png"})


def test_server_errors_fail_the_first_attempts_then_succeed(emulator):
    emulator.faults.update({"server_error": 1.0, "attempts": 2})
    url = f"{emulator.site('danbooru')}/posts.json?limit=1"
    statuses = [http_get(url).status for _ in range(3)]
    assert statuses[0] >= 500 and statuses[1] >= 500 and statuses[2] == 200


def test_danbooru_timeouts_answer_query_canceled_json(emulator):
    emulator.faults.update({"server_error": 1.0, "attempts": 0})
    url = f"{emulator.site('danbooru')}/posts.json?limit=2"
    seen = {}
    for _ in range(4):
        r = http_get(url)
        seen[r.status] = r
    assert set(seen) == {500, 502, 503, 504}
    assert seen[500].json()["error"] == "ActiveRecord::QueryCanceled"
    assert seen[503].headers["Retry-After"] == "1"


def test_fault_rate_picks_a_stable_share_of_urls(emulator):
    emulator.faults.update({"server_error": 0.3, "attempts": 1})
    db = emulator.site("danbooru")
    failed = [http_get(f"{db}/posts.json?limit=1&page={i}").status >= 500 for i in range(200)]
    assert 30 < sum(failed) < 90
    again = [http_get(f"{db}/posts.json?limit=1&page={i}").status >= 500 for i in range(200)]
    assert not any(again)


def test_429_with_and_without_retry_after(emulator):
    emulator.faults.update({"rate_429": 1.0, "attempts": 0})
    url = f"{emulator.site('danbooru')}/posts.json?limit=1"
    replies = [http_get(url) for _ in range(2)]
    assert [r.status for r in replies] == [429, 429]
    assert sum("Retry-After" in r.headers for r in replies) == 1


def test_slow_answers_are_delayed(emulator):
    emulator.faults.update({"slow": 1.0, "slow_seconds": 0.6})
    start = time.monotonic()
    assert http_get(f"{emulator.site('danbooru')}/posts.json?limit=1").status == 200
    assert time.monotonic() - start >= 0.55


def test_connection_resets(emulator):
    emulator.faults.update({"reset": 1.0})
    url = f"{emulator.site('danbooru')}/posts.json?limit=1"
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        http_get(url)
    assert http_get(url).status == 200


def test_truncated_bodies_fall_short_of_content_length(emulator):
    post = _file_post(emulator)
    emulator.faults.update({"truncate": 1.0})
    req = urllib.request.Request(post["file_url"], headers={"User-Agent": AGENT})
    with pytest.raises(http.client.IncompleteRead), urllib.request.urlopen(req) as r:
        r.read()
    assert hashlib.md5(http_get(post["file_url"]).body).hexdigest() == post["md5"]


def test_md5_mismatch_html_200_empty_and_404_faults(emulator):
    post = _file_post(emulator)
    url = post["file_url"]
    emulator.faults.update({"md5_mismatch": 1.0, "attempts": 0})
    bad = http_get(url)
    assert bad.status == 200 and hashlib.md5(bad.body).hexdigest() != post["md5"]
    assert len(bad.body) == int(bad.headers["Content-Length"])
    emulator.faults.update({"md5_mismatch": 0.0, "html_200": 1.0})
    html = http_get(url)
    assert html.status == 200 and html.headers["Content-Type"].startswith("text/html")
    assert html.body.lstrip().startswith(b"<!DOCTYPE html>")
    emulator.faults.update({"html_200": 0.0, "empty": 1.0})
    empty = http_get(url)
    assert empty.status == 200 and empty.body == b"" and empty.headers["Content-Length"] == "0"
    emulator.faults.update({"empty": 0.0, "not_found": 1.0})
    assert http_get(url).status == 404
    # API answers are never hit by file-only faults.
    assert http_get(f"{emulator.site('danbooru')}/posts.json?limit=1").status == 200


def test_range_requests_etags_and_416(emulator):
    post = _file_post(emulator)
    url = post["file_url"]
    whole = http_get(url)
    size = len(whole.body)
    part = http_get(url, {"Range": "bytes=10-99"})
    assert part.status == 206 and part.body == whole.body[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{size}"
    tail = http_get(url, {"Range": "bytes=-50"})
    assert tail.status == 206 and tail.body == whole.body[-50:]
    rest = http_get(url, {"Range": f"bytes={size - 5}-"})
    assert rest.body == whole.body[-5:]
    too_far = http_get(url, {"Range": f"bytes={size}-"})
    assert too_far.status == 416 and too_far.headers["Content-Range"] == f"bytes */{size}"
    assert whole.headers["ETag"] == f'"{post["md5"]}"'
    assert http_get(url, {"If-None-Match": whole.headers["ETag"]}).status == 304


class StoppedClock:
    """The emulator's rate-limit clock, moved only by the test."""

    def __init__(self):
        self.now = 1024.0  # and steps of 1/8 s: exact in binary

    def __call__(self) -> float:
        return self.now


def test_per_client_rate_limit_answers_429_without_retry_after(emulator):
    clock = StoppedClock()
    saved, emulator.emulator.bucket = emulator.emulator.bucket, TokenBucket(clock)
    try:
        emulator.faults.update({"rate_limit": 5.0, "burst": 5})
        url = f"{emulator.site('danbooru')}/posts.json?limit=1"
        replies = [http_get(url) for _ in range(15)]
        assert [r.status for r in replies] == [200] * 5 + [429] * 10     # the burst, then none
        assert all("Retry-After" not in r.headers and b"nginx" in r.body for r in replies[5:])
        clock.now += 0.125                               # 0.625 of a token at 5/s
        assert http_get(url).status == 429
        clock.now += 0.5                                 # 3.125 tokens: three answers
        assert [http_get(url).status for _ in range(4)] == [200, 200, 200, 429]
        clock.now += 60                                  # refilled, to the burst only
        assert [http_get(url).status for _ in range(6)] == [200] * 5 + [429]
    finally:
        emulator.emulator.bucket = saved


def test_request_log_records_every_request(emulator):
    start = http_get(f"{emulator.url}/_emulator/log").json()
    since = start[-1]["n"] if start else 0
    emulator.faults.update({"server_error": 1.0})
    http_get(f"{emulator.site('danbooru')}/posts.json?limit=3&tags=heart")
    http_get(f"{emulator.site('danbooru')}/posts.json?limit=3&tags=heart")
    entries = http_get(f"{emulator.url}/_emulator/log?since={since}").json()
    mine = [e for e in entries if e["query"] == "limit=3&tags=heart"]
    assert [e["fault"] for e in mine] == ["server_error", None]
    assert mine[0]["status"] >= 500 and mine[1]["status"] == 200
    assert mine[0]["agent"] == AGENT and mine[0]["client"] == "127.0.0.1"


def test_faults_switch_at_run_time_through_the_control_endpoint(emulator):
    req = urllib.request.Request(f"{emulator.url}/_emulator/faults", method="POST",
                                 data=json.dumps({"server_error": 1, "attempts": 0}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": AGENT})
    with urllib.request.urlopen(req) as r:
        assert json.load(r)["server_error"] == 1.0
    assert http_get(f"{emulator.site('danbooru')}/posts.json").status >= 500
    info = http_get(f"{emulator.url}/_emulator/info").json()
    assert "heart" in info["visual_tags"] and info["posts"] == emulator.world.n_posts


def test_fault_config_parses_and_rejects_unknown_kinds():
    config = FaultConfig.parse("server_error=0.1,attempts=3,block_browser_ua=false")
    assert config.server_error == 0.1 and config.attempts == 3
    assert config.block_browser_ua is False
    with pytest.raises(ValueError, match="unknown fault"):
        FaultConfig.parse("explode=1")


def test_original_missing_while_sample_exists():
    with EmulatorThread(seed=7, posts=60, image_scale=1.0,
                        faults=FaultConfig(not_found=1.0, attempts=0)) as emu:
        db = emu.site("danbooru")
        posts = http_get(f"{db}/posts.json?limit=60").json()
        post = next(p for p in posts if "file_url" in p and "/sample/" in p["large_file_url"])
        emu.faults.not_found = 0.0
        assert http_get(post["large_file_url"]).status == 200
        emu.faults.not_found = 1.0
        assert http_get(post["file_url"]).status == 404


def test_command_line_serves_and_rejects_bad_flags(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "scrape.emulator", "--faults", "explode=1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown fault setting" in bad.stderr
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "scrape.emulator", "--port", str(port),
                             "--posts", "40", "--seed", "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert "booru emulator" in proc.stdout.readline()
        info = http_get(f"http://127.0.0.1:{port}/_emulator/info").json()
        assert info["posts"] == 40 and info["seed"] == 3
    finally:
        proc.terminate()
        proc.wait(10)
