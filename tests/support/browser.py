"""Headless Chromium through Selenium for the page tests, or a pytest skip saying why not.

Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver);
runs with --no-sandbox (CI runs as root) and a temporary profile. Screenshots go to the test's
folder, and also to $BOORU_TAGGER_SCREENSHOTS when set (the README's pictures in docs/).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    found = next((p for p in paths if os.access(p, os.X_OK)), None)
    return found or shutil.which(name)


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator:
    """A headless Chromium WebDriver; skips the test when the browser or driver is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    browser, driver_path = _first(CHROMIUM, "chromium"), _first(DRIVER, "chromedriver")
    if not browser or not driver_path:
        pytest.skip("no Chromium or chromedriver on this machine "
                    "(apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="booru-tagger-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, path: Path, name: str) -> Path:
    """Save a PNG of the window to `path/name`, and to $BOORU_TAGGER_SCREENSHOTS/name."""
    out = path / name
    driver.save_screenshot(str(out))
    extra = os.environ.get("BOORU_TAGGER_SCREENSHOTS")
    if extra:
        shutil.copyfile(out, Path(extra) / name)
    return out
