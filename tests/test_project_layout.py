"""Guards: the stage packages come from this checkout, and every console entry point runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["cli_kit", "scrape", "prep", "shards", "train"]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_imported_from_this_repository(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / name


# `python -m train` is run by test_usage_errors_fail_with_a_message_not_a_traceback (one torch
# import in a subprocess is enough); tests/test_cli_help.py checks every command's --help.
@pytest.mark.parametrize("package", ["scrape", "prep"])
def test_python_dash_m_runs_each_cli(package):
    result = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_console_scripts_are_declared_and_installed():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"scrape", "prep", "train", "tag"}
    bindir = Path(sys.executable).parent
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
        assert (bindir / name).exists(), f"console script {name} not installed in {bindir}"


def test_usage_errors_fail_with_a_message_not_a_traceback():
    result = subprocess.run([sys.executable, "-m", "train"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("train: ")


def test_the_emulator_serves_every_site_the_scraper_has_an_adapter_for():
    """Two registries by design (the emulator never imports the scraper); this keeps them one
    list of sites."""
    from scrape.emulator.sites import SITES as EMULATED
    from scrape.sites import SITES as ADAPTERS
    assert list(EMULATED) == list(ADAPTERS)
    from scrape.emulator import EmulatorThread
    with EmulatorThread(posts=5, image_scale=0.05) as emu:
        for site, entry in EMULATED.items():
            assert ADAPTERS[site].name == site
            with urllib.request.urlopen(urllib.request.Request(
                    emu.site(site) + entry.one_post,
                    headers={"User-Agent": "booru-tagger-test"}), timeout=60) as reply:
                assert reply.status == 200


DOCUMENT = re.compile(r"[\w./-]*\w\.md\b")
NOT_DOCUMENTS = {"notes.md"}        # a file name a test writes into its own folder


def missing_documents(root: Path) -> list[str]:
    """``file:line: name`` for each ``*.md`` named in the sources, docs and build files under
    ``root`` that is not a file of the repository (a bare name may also be one in docs/)."""
    files = [p for pattern in ("*.py", "*.md", "*.toml", "Makefile") for p in root.rglob(pattern)
             if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    out = []
    for path in sorted(files):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in DOCUMENT.findall(line):
                if name in NOT_DOCUMENTS or (root / name).is_file() \
                        or "/" not in name and (root / "docs" / name).is_file():
                    continue
                out.append(f"{path.relative_to(root)}:{number}: {name}")
    return out


def test_every_document_the_project_names_is_in_the_repository():
    assert missing_documents(ROOT) == []


def test_no_test_module_imports_another_and_helpers_live_in_support():
    """Shared helpers are in tests/support/ (no tests there); a test module imports none of
    its siblings, so each can be read, run and moved alone."""
    import ast
    tests = Path(__file__).parent
    siblings = {p.stem for p in tests.glob("test_*.py")} | {"conftest"}
    for path in sorted(tests.glob("*.py")) + sorted((tests / "support").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and not n.level}
        names |= {(n.module or "").split(".")[1] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("tests.")}
        assert not names & siblings, f"{path.name} imports {sorted(names & siblings)}"
        if path.parent.name == "support":
            assert not any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
                           for n in tree.body), f"{path.name}: tests belong in tests/"
    helpers = [p.name for p in tests.glob("*.py")
               if not p.name.startswith("test_") and p.name != "conftest.py"]
    assert not helpers, f"helpers outside tests/support/: {helpers}"
