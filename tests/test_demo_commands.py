"""The demo's echoed commands paste as they are: a real shell given an echoed line runs exactly
the argv list the demo ran (the empty `--tags ''` of its scrape, a folder with a space), and the
closing suggestions paste too. The demo itself is not run here (test_tag_demo.py runs it)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = subprocess.run        # the real one, also while a test replaces the demo's


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_the_shell_reads(line: str) -> list[str]:
    """The words `sh` makes of `line` (each printed on its own line by printf)."""
    done = RUN([shutil.which("sh") or "/bin/sh", "-c", f"printf '%s\\n' {line}"],
                          capture_output=True, text=True, check=True)
    return done.stdout.split("\n")[:-1]


def test_every_echoed_command_is_the_argv_the_demo_runs(demo, tmp_path):
    out = tmp_path / "my demo's out"                   # a space and a quote, as a home may have
    steps = demo.commands(out, "http://127.0.0.1:38273/danbooru", 300, 32, 1)
    assert set(steps) == {"scrape", "make-tag-index", "make-shards", "train", "tag captions",
                          "tag table"}
    scrape = steps["scrape"]
    assert scrape[scrape.index("--tags") + 1] == ""    # every post: the empty search
    for name, argv in steps.items():
        line = demo.echo(argv)
        assert line.startswith("  $ "), name
        assert as_the_shell_reads(line[4:]) == argv, name


def test_the_demo_runs_what_it_echoes(demo, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(demo.subprocess, "run",
                        lambda cmd: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    argv = [sys.executable, "-m", "scrape", "--tags", "", "--out", "a b"]
    assert demo.run(argv) == 0
    assert ran == [argv]
    (line,) = capsys.readouterr().out.splitlines()
    assert as_the_shell_reads(line.removeprefix("  $ ")) == argv


def test_the_closing_suggestions_paste_as_they_are(demo, tmp_path):
    model, tagged = tmp_path / "demo out" / "run", tmp_path / "demo out" / "tagged"
    lines = demo.next_steps(model, tagged).splitlines()
    tag, export = lines[0].removeprefix("   next: ").split("    ")
    assert as_the_shell_reads(tag) == ["tag", "--model", str(model), "YOUR_IMAGES",
                                       "--captions"]
    assert as_the_shell_reads(export) == ["train", "export", "--model", str(model), "--format",
                                          "onnx"]
    assert as_the_shell_reads(lines[2].strip()) == ["tag", "review", str(tagged), "--model",
                                                    str(model)]
