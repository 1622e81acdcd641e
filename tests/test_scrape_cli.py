"""The `scrape` command line: usage errors, credentials and secrets, user agent, --config, runs/.

    .venv/bin/python -m pytest tests/test_scrape_cli.py -q
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.scrape_runs import (
    FAST,
    log_since,
    read_rows,
    scrape,
    world_posts,
)

from scrape import job as scrape_job
from scrape.cli import main

ROOT = Path(__file__).resolve().parents[1]
THREE_TAGS = "nunudochi_hozune zuro_sugo_(nunudochi_hozune) hami"
KEY = "gold-key"
SECRETS = [KEY.encode(), base64.b64encode(b"gold:gold-key")]


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch):
    for name in ("DANBOORU_LOGIN", "DANBOORU_API_KEY", "GELBOORU_USER_ID", "GELBOORU_API_KEY",
                 "SAFEBOORU_USER_ID", "SAFEBOORU_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scrape: ")
    return lines[0]


def runs_json(raw: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((raw / "runs").glob("*.json"))]


def all_bytes(raw: Path) -> bytes:
    return b"".join(p.read_bytes() for p in raw.rglob("*") if p.is_file())


# -- usage errors --------------------------------------------------------------------------
USAGE = {
    "no site": ([], "--site is required"),
    "no out": (["--site", "danbooru", "--tags", "x"], "--out is required"),
    "bad ratings": (["--ratings", "general,spicy"], "unknown rating(s) spicy"),
    "limit 0": (["--limit", "0"], "--limit must be at least 1"),
    "concurrency 0": (["--concurrency", "0"], "--concurrency must be at least 1"),
    "negative rate": (["--rate", "-1"], "--rate must be >= 0"),
    "unknown config key": (["--config", "{toml}"], "unknown option"),
    "missing config": (["--config", "{missing}"], "cannot read --config"),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    argv, message = USAGE[case]
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    full = ["--site", "danbooru", "--tags", "x", "--out", str(tmp_path / "raw")]
    if case in {"no site", "no out"}:
        full = []
    argv = [a.format(toml=tmp_path / "bad.toml", missing=tmp_path / "none.toml")
            for a in argv]
    assert main([*full, *argv]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "raw").exists()


def test_an_unknown_site_is_an_argparse_error(tmp_path, capsys):
    assert main(["--site", "pixiv", "--tags", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "invalid choice: 'pixiv'" in err.strip().splitlines()[-1]


def test_negative_retries_is_a_usage_error(emulator, tmp_path, capsys):
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--retries", "-1") == 2
    assert "--retries" in one_line_error(capsys)


def test_a_config_value_of_the_wrong_type_is_a_usage_error(emulator, tmp_path, capsys):
    config = tmp_path / "job.toml"
    config.write_text('limit = "ten"\n')
    assert scrape(emulator, "danbooru", "hami", tmp_path / "raw", "--config", str(config)) == 2
    assert "limit" in one_line_error(capsys)


# -- the site refuses the job --------------------------------------------------------------
def test_three_tags_anonymous_is_refused_with_the_two_tag_message(emulator, tmp_path, capsys):
    assert scrape(emulator, "danbooru", THREE_TAGS, tmp_path) == 2
    line = one_line_error(capsys)
    assert "2 tags" in line and "DANBOORU_API_KEY" in line
    assert read_rows(tmp_path) == []


def test_credentials_from_the_environment_allow_three_tags(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("DANBOORU_LOGIN", "gold")
    monkeypatch.setenv("DANBOORU_API_KEY", KEY)
    assert scrape(emulator, "danbooru", THREE_TAGS, tmp_path) == 0
    posts = world_posts(emulator.world, "hami")
    tags = set(THREE_TAGS.split())
    want = [p for p in posts if tags <= set(p.tag_list)]
    rows = read_rows(tmp_path)
    assert want and {r["id"] for r in rows} == {p.id for p in want}
    assert all(r["status"] in {"downloaded", "skipped_deleted", "skipped_banned",
                               "skipped_not_image"} for r in rows)
    data = all_bytes(tmp_path)
    assert not [s for s in SECRETS if s in data]


def test_only_half_the_credentials_is_a_usage_error(emulator, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DANBOORU_LOGIN", "gold")
    assert scrape(emulator, "danbooru", "hami", tmp_path) == 2
    assert "DANBOORU_API_KEY" in one_line_error(capsys)


def test_the_api_key_never_reaches_raw_or_the_terminal(emulator, tmp_path):
    """A real process, verbose: the key is in no file under raw/ and not in stdout/stderr."""
    raw = tmp_path / "raw"
    env = {**os.environ, "DANBOORU_LOGIN": "gold", "DANBOORU_API_KEY": KEY}
    fast = [a for a in FAST if a != "-q"]
    done = subprocess.run([sys.executable, "-m", "scrape", "--site", "danbooru", "--tags",
                           THREE_TAGS, "--out", str(raw), "--base-url", emulator.site("danbooru"),
                           *fast, "-v"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"posts listed" in done.stdout                  # the summary
    for secret in SECRETS:
        assert secret not in done.stdout and secret not in done.stderr
        assert secret not in all_bytes(raw)
    assert runs_json(raw) and (raw / "state.sqlite").exists()


def test_gelbooru_api_key_from_the_environment(emulator, tmp_path, monkeypatch, caplog, capsys):
    emulator.emulator.gelbooru_auth = "401"
    assert scrape(emulator, "gelbooru", "hami", tmp_path / "anonymous") == 2
    assert "GELBOORU_API_KEY" in one_line_error(capsys)
    monkeypatch.setenv("GELBOORU_USER_ID", "1234")
    monkeypatch.setenv("GELBOORU_API_KEY", "gelbooru-key")
    caplog.set_level(logging.DEBUG)
    raw = tmp_path / "raw"
    assert scrape(emulator, "gelbooru", "hami", raw, "-v") == 0
    rows = read_rows(raw)
    assert {r["id"] for r in rows} == {p.id for p in world_posts(emulator.world, "hami")
                                       if not p.is_deleted}
    out = capsys.readouterr()
    for text in (out.out, out.err, caplog.text):
        assert "gelbooru-key" not in text
    assert b"gelbooru-key" not in all_bytes(raw)


def test_gelbooru_refusal_in_xml_is_a_one_line_error(emulator, tmp_path, capsys):
    emulator.emulator.gelbooru_auth = "xml"
    assert scrape(emulator, "gelbooru", "hami", tmp_path) == 2
    assert "API key" in one_line_error(capsys)


# -- user agent ----------------------------------------------------------------------------
def test_a_browser_user_agent_meets_the_cloudflare_challenge(emulator, tmp_path, capsys):
    n0 = emulator.emulator.log.total
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--user-agent", agent) == 2
    assert "Cloudflare" in one_line_error(capsys)
    assert len(log_since(emulator, n0)) == 1               # a challenge is not retried


def test_the_user_agent_is_sent_on_every_request(emulator, tmp_path):
    n0 = emulator.emulator.log.total
    agent = "my-tagger/2.0 (+mailto:me@example.com)"
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--user-agent", agent) == 0
    entries = log_since(emulator, n0)
    assert len(entries) > 5 and {e["agent"] for e in entries} == {agent}


def test_the_summary_is_printed_unless_quiet(emulator, tmp_path, capsys):
    argv = ["--site", "konachan", "--tags", "hami", "--out", str(tmp_path),
            "--base-url", emulator.site("konachan"), "--rate", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    downloaded = sum(r["status"] == "downloaded" for r in read_rows(tmp_path))
    assert "posts listed" in out
    assert re.search(rf"^\s+downloaded\s+{downloaded}$", out, re.MULTILINE)


# -- --config and runs/ --------------------------------------------------------------------
def test_config_values_apply_and_flags_win(emulator, tmp_path):
    raw = tmp_path / "raw"
    config = tmp_path / "job.toml"
    config.write_text(f'site = "danbooru"\ntags = "hami"\nout = "{raw}"\n'
                      f'base-url = "{emulator.site("danbooru")}"\nrate = 0\nconcurrency = 3\n'
                      'limit = 5\nmetadata-only = true\nquiet = true\n')
    assert main(["--config", str(config), "--limit", "7"]) == 0
    rows = read_rows(raw)
    assert len(rows) == 7
    want = world_posts(emulator.world, "hami")[:7]
    assert {r["id"] for r in rows} == {p.id for p in want}
    assert {r["status"] for r in rows} <= {"metadata_only", "skipped_deleted",
                                           "skipped_banned", "skipped_hidden",
                                           "skipped_not_image"}
    (settings,) = runs_json(raw)
    assert settings["limit"] == 7 and settings["concurrency"] == 3
    assert settings["metadata_only"] is True and settings["site"] == "danbooru"
    assert settings["out"] == str(raw) and settings["rate"] == 0


def test_an_explicit_flag_wins_even_when_it_equals_the_default(emulator, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text('variant = "sample"\n')
    raw = tmp_path / "raw"
    assert scrape(emulator, "danbooru", "hami", raw, "--config", str(config), "--variant",
                  "original", "--metadata-only") == 0
    assert runs_json(raw)[0]["variant"] == "original"


def test_settings_are_written_under_runs_without_secrets(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("DANBOORU_LOGIN", "gold")
    monkeypatch.setenv("DANBOORU_API_KEY", KEY)
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--limit", "3", "--ratings",
                  "general", "--min-score", "1") == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    assert "-danbooru-" in path.name and path.suffix == ".json"
    settings = json.loads(path.read_text())
    assert settings["tags"] == "hami" and settings["limit"] == 3
    assert settings["ratings"] == ["general"] and settings["min_score"] == 1
    assert settings["base_url"] == emulator.site("danbooru") and "version" in settings
    assert not [s for s in SECRETS if s in path.read_bytes()]


def test_every_run_keeps_its_settings_file(emulator, tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    monkeypatch.setattr(scrape_job, "datetime", FrozenClock)
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--metadata-only") == 0
    assert scrape(emulator, "danbooru", "hami", tmp_path, "--metadata-only", "--limit", "2") == 0
    assert len(runs_json(tmp_path)) == 2

