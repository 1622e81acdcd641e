"""The package as users get it: a wheel and an sdist built from this checkout, the wheel installed
without -e into fresh virtual environments, one without torch (the base install) and one with it.

The fresh environments take their third-party dependencies from this test environment (a folder
of links to its site-packages, on the path through a .pth file), so nothing is downloaded, and
the base one leaves torch, torchvision and their CUDA libraries out, as `pip install
booru-tagger` does. Each command runs from an empty folder, so only the installed wheel can be
imported, never this checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
# What the `train` extra adds; the base environment must do without all of it.
TORCH_ONLY = re.compile(r"^(torch|torchvision|functorch|torchgen|triton|nvidia|cuda)", re.I)
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "demo-out",
                                     "bench-out", "__pycache__", ".pytest_cache", ".ruff_cache")

pytestmark = pytest.mark.heavy


def _run(args, cwd) -> subprocess.CompletedProcess:
    """Run a command of a fresh environment; PYTHONPATH is cleared so that only what is
    installed there can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist) built from a copy of this checkout (the tree itself is left untouched)."""
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = work / "dist"
    wheel = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-w", dist, src], cwd=work)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    sdist = _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                  "print(b.build_sdist(sys.argv[1]))", dist], cwd=src)
    assert sdist.returncode == 0, sdist.stderr[-2000:]
    return next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))


def _fresh_env(root: Path, wheel: Path, with_torch: bool) -> Path:
    """A new venv with the wheel installed (no -e) and this environment's packages as links."""
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent).check_returncode()
    site = Path(sysconfig.get_paths()["purelib"])
    deps = root / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        name = entry.name
        if (name.startswith(("__editable__", "booru_tagger", "_distutils_hack"))
                or name.endswith(".pth") or (not with_torch and TORCH_ONLY.match(name))):
            continue
        (deps / name).symlink_to(entry)
    python = root / "bin" / "python"
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                          "['purelib'])"], cwd=root).stdout.strip())
    (fresh_site / "zz_test_deps.pth").write_text(f"{deps}\n")
    install = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--no-index", "--quiet", wheel], cwd=root)
    assert install.returncode == 0, install.stderr[-2000:]
    return root / "bin"


@pytest.fixture(scope="module")
def base_env(built, tmp_path_factory) -> Path:
    return _fresh_env(tmp_path_factory.mktemp("base") / "venv", built[0], with_torch=False)


@pytest.fixture(scope="module")
def full_env(built, tmp_path_factory) -> Path:
    return _fresh_env(tmp_path_factory.mktemp("full") / "venv", built[0], with_torch=True)


def test_wheel_ships_every_subpackage_and_nothing_else(built):
    names = zipfile.ZipFile(built[0]).namelist()
    shipped = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    packages = ("cli_kit", "scrape", "prep", "shards", "train")
    expected = {str(p.parent.relative_to(ROOT)) for pkg in packages
                for p in (ROOT / pkg).rglob("__init__.py")}
    assert expected <= shipped, f"missing from the wheel: {sorted(expected - shipped)}"
    assert {"scrape/sites", "scrape/emulator"} <= shipped
    assert {"train/tag/review/static/review.js",
            "train/tag/review/static/review.css"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_holds_what_the_wheel_needs(built):
    with tarfile.open(built[1]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"README.md", "LICENSE", "pyproject.toml", "scrape/sites/danbooru.py",
            "scrape/emulator/app.py", "train/entry.py"} <= names


def test_every_console_script_answers_help_from_the_full_install(full_env, tmp_path):
    for name in SCRIPTS:
        result = _run([full_env / name, "--help"], cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        assert result.stdout.startswith("usage:"), name
    where = _run([full_env / "python", "-c", "import scrape.sites, train; "
                  "print(scrape.sites.__file__); print(train.__file__)"], cwd=tmp_path)
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout


def test_base_install_scrapes_the_emulator_without_torch(base_env, emulator, tmp_path):
    probe = _run([base_env / "python", "-c", "import importlib.util as u; "
                  "print(u.find_spec('torch'), u.find_spec('torchvision'))"], cwd=tmp_path)
    assert probe.stdout.split() == ["None", "None"], "the base environment must not see torch"
    out = tmp_path / "raw"
    result = _run([base_env / "scrape", "--site", "danbooru", "--base-url",
                   emulator.site("danbooru"), "--tags", "", "--limit", "8", "--out", out],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = pq.read_table(out / "posts").to_pylist()
    assert len(rows) == 8
    assert any(r["status"] == "downloaded" and (out / r["image_path"]).is_file() for r in rows)
    index = _run([base_env / "prep", "make-tag-index", "--posts", out, "--out",
                  tmp_path / "tags.csv"], cwd=tmp_path)
    assert index.returncode == 0, index.stderr[-2000:]
    assert (tmp_path / "tags.csv").read_text().startswith("tag_id,name,category,count")
    built = _run([base_env / "prep", "make-shards", "--posts", out, "--tags",
                  tmp_path / "tags.csv", "--out", tmp_path / "shards", "--image-size", "32"],
                 cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    read = _run([base_env / "python", "-c", "import sys, shards; print(sum(1 for _ in "
                 "shards.read_shards(sys.argv[1], 'train')) + sum(1 for _ in "
                 "shards.read_shards(sys.argv[1], 'val')))", tmp_path / "shards"], cwd=tmp_path)
    assert read.returncode == 0, read.stderr[-2000:]
    assert int(read.stdout) == sum(r["status"] == "downloaded" for r in rows)


@pytest.mark.parametrize("name", ["train", "tag"])
def test_train_and_tag_without_torch_name_the_extra(base_env, tmp_path, name):
    result = _run([base_env / name, "--help"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: ")
    assert "pip install 'booru-tagger[train]'" in lines[0]


@pytest.mark.parametrize("argv", [["scrape", "--help"], ["prep", "--help"],
                                  ["prep", "make-tag-index", "--help"]])
def test_base_commands_never_import_torch(full_env, tmp_path, argv):
    """Even where torch is installed, scrape, prep and the shard writer do not load it (the
    shard reader uses webdataset, which imports torch when it is there and works without it,
    as the base-install test shows)."""
    code = ("import runpy, sys\n"
            f"sys.argv = {argv!r}\n"
            "try:\n"
            f"    runpy.run_module({argv[0]!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "import shards.writer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    result = _run([full_env / "python", "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
