"""A search that matches no post says so, with the site's tag search to check the spelling."""

from __future__ import annotations

import pytest
from support.scrape_runs import scrape


@pytest.mark.parametrize(("site", "page"), [
    ("danbooru", "/tags?search[name_or_alias_matches]=hatsune_mikku*"),
    ("gelbooru", "/index.php?page=tags&s=list&tags=hatsune_mikku*"),
    ("yandere", "/tag?name=hatsune_mikku*"),
])
def test_a_search_that_matches_nothing_says_so(emulator, tmp_path, capsys, site, page):
    out = tmp_path / "raw"
    assert scrape(emulator, site, "hatsune_mikku rating:g", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scrape: no post matched")
    assert "'hatsune_mikku rating:g'" in err
    assert err.strip().endswith(emulator.site(site) + page)
    assert not list((out / "posts").glob("*.parquet"))


def test_a_search_that_matches_posts_exits_0(emulator, tmp_path, capsys):
    assert scrape(emulator, "danbooru", "", tmp_path / "raw", "--limit", "3") == 0
    assert "no post matched" not in capsys.readouterr().err
