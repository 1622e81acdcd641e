"""`train report`: numbers checked against scikit-learn, then the page in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape

import numpy as np
import pytest
from support.browser import chromium, screenshot
from support.report_fixtures import cached_run

from train.cli import main as train_main
from train.metrics import score
from train.report import pages
from train.report.analysis import pr_curve, tag_rows, worst
from train.report.cli import _tag_pages
from train.report.cli import main as report_main
from train.report.scores import ValScores


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"   # a copy: the report is written into it
    shutil.copytree(cached_run(tmp_path_factory), run)
    assert report_main(["--model", str(run), "--examples", "4", "-q"]) == 0
    return run / "report"


def test_pr_curve_is_sklearns():
    precision_recall_curve = pytest.importorskip("sklearn.metrics").precision_recall_curve
    rng = np.random.default_rng(0)
    targets = rng.random(300) < 0.3
    scores = np.round(np.clip(targets * 0.3 + rng.random(300) * 0.7, 0, 1), 2)  # with ties
    p, r, t = pr_curve(scores, targets, max_points=10_000)
    sp, sr, st = precision_recall_curve(targets, scores)
    # sklearn: ascending thresholds with a final (precision 1, recall 0) point.
    np.testing.assert_allclose(p, sp[:-1][::-1])
    np.testing.assert_allclose(r, sr[:-1][::-1])
    np.testing.assert_allclose(t, st[::-1])
    assert len(pr_curve(scores, targets, max_points=50)[0]) <= 50
    assert len(pr_curve(scores, np.zeros(300), max_points=50)[0]) == 0


def test_tag_rows_and_worst_pictures():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 3)) < 0.4).astype(np.uint8)
    scores = np.clip(targets * 0.4 + rng.random((200, 3)) * 0.6, 0, 1)
    limits = np.array([0.3, 0.5, 0.7])
    rows = tag_rows(scores, targets, limits)
    for i, row in enumerate(rows):
        pred = scores[:, i] >= limits[i]
        assert row["precision"] == pytest.approx(sk.precision_score(targets[:, i], pred))
        assert row["recall"] == pytest.approx(sk.recall_score(targets[:, i], pred))
        assert row["f1"] == pytest.approx(sk.f1_score(targets[:, i], pred))
        assert row["support"] == targets[:, i].sum()
    fp, fn = worst(scores[:, 1], targets[:, 1], 0.5, 5)
    negatives = scores[:, 1][(targets[:, 1] == 0) & (scores[:, 1] >= 0.5)]
    assert list(scores[fp, 1]) == sorted(negatives, reverse=True)[:5]
    positives = scores[:, 1][(targets[:, 1] == 1) & (scores[:, 1] < 0.5)]
    assert list(scores[fn, 1]) == sorted(positives)[:5]
    assert not targets[fp, 1].any() and targets[fn, 1].all()


def test_headline_labels_tuned_thresholds_and_shows_the_crossfitted_f1():
    from train import metrics
    from train.report import pages
    rng = np.random.default_rng(2)
    targets = rng.random((300, 8)) < 0.3
    report = metrics.score(np.clip(targets * 0.3 + rng.random((300, 8)) * 0.7, 0, 1),
                              targets)
    text = pages.headline_table(report)
    assert "cross-fitted" in text and "optimistic" in text
    for key in ("at_pr_crossfit_micro_f1", "per_tag_crossfit_macro_f1",
                "per_tag_tuned_on_val_micro_f1"):
        assert pages.num(report[key]) in text, key


def test_report_recomputes_the_runs_validation_numbers(report):
    summary = json.loads((report / "report.json").read_text())
    final = json.loads((report.parent / "eval.json").read_text())
    assert summary["samples"] == final["samples"]
    assert summary["mAP"] == pytest.approx(final["mAP"], abs=1e-4)
    tags = summary["tags"]
    assert len(list((report / "tags").glob("*.html"))) == len(tags)
    shown = {t["page"]: min(t["fp"], 4) + min(t["fn"], 4) + min(t["tp"], 4) for t in tags}
    assert sum(shown.values()) > 0
    assert 0 < len(list((report / "thumbs").glob("*.jpg"))) <= sum(shown.values())
    html = (report / "index.html").read_text()
    assert "http://" not in html and "https://" not in html          # nothing fetched


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report_main(["--model", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert train_main(["report", "--model", str(tmp_path / "missing")]) == 2


def test_report_in_the_browser(report, tmp_path):
    from selenium.webdriver.common.by import By
    with chromium() as driver:
        driver.get((report / "index.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#tags tbody tr")
        summary = json.loads((report / "report.json").read_text())
        assert len(rows) == len(summary["tags"])
        assert driver.find_elements(By.CSS_SELECTOR, "svg.curve polyline[data-series=mAP]")
        screenshot(driver, tmp_path, "report.png")
        # Sort by AP, descending: the first row is the best tag.
        header = driver.find_element(By.XPATH, "//table[@id='tags']//th[text()='AP']")
        header.click()
        first = driver.find_element(By.CSS_SELECTOR, "#tags tbody tr td a").text
        best = max((t for t in summary["tags"] if t["ap"] is not None), key=lambda t: t["ap"])
        assert first == best["name"]
        # Filter: only the matching tags stay visible.
        driver.find_element(By.ID, "filter").send_keys("background")
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#tags tbody tr")
                   if r.is_displayed()]
        assert visible and all("background" in r.text for r in visible)
        assert len(visible) == sum("background" in t["name"] for t in summary["tags"])
        # The tag page with the most false positives: its curve and its thumbnails, loaded.
        tag = max(summary["tags"], key=lambda t: t["fp"])
        assert tag["fp"] > 0
        driver.find_element(By.ID, "filter").clear()
        driver.find_element(By.ID, "filter").send_keys(tag["name"])
        driver.find_element(By.LINK_TEXT, tag["name"]).click()
        assert driver.find_element(By.TAG_NAME, "h1").text == tag["name"]
        assert driver.find_elements(By.CSS_SELECTOR, "svg.pr polyline")
        thumbs = driver.find_elements(By.CSS_SELECTOR, "#false-positives figure img")
        assert len(thumbs) == min(tag["fp"], 4)
        for img in thumbs:
            assert driver.execute_script("return arguments[0].complete && "
                                         "arguments[0].naturalWidth > 0", img)
        scores = [float(f.text.split()[0]) for f in
                  driver.find_elements(By.CSS_SELECTOR, "#false-positives .score")]
        assert scores == sorted(scores, reverse=True) and min(scores) >= tag["threshold"]
        screenshot(driver, tmp_path, "report-tag.png")


def test_train_writes_the_report_unless_told_not_to(tmp_path_factory, tmp_path):
    shards = cached_run(tmp_path_factory).parent / "shards"
    argv = ["--stream", "--shards", str(shards), "--arch", "resnet18", "--weights", "none",
            "--image-size", "32", "--epochs", "1", "--max-steps", "1", "--batch-size", "32",
            "--workers", "0", "-q"]
    assert train_main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report" / "index.html").is_file()
    assert train_main([*argv, "--out", str(tmp_path / "b"), "--no-report"]) == 0
    assert (tmp_path / "b" / "eval.json").is_file() and not (tmp_path / "b" / "report").exists()


# Three tags over six pictures, each threshold 0.5: `perfect` is learned exactly, `absent` has
# no positive in validation (and no score over its threshold), `mixed` is in between.
NAMES = ["perfect", "absent", "mixed"]
TARGETS = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], np.uint8)
SCORES = np.array([[.9, .1, .8], [.8, .2, .3], [.1, .3, .6], [.2, .1, .7], [.7, .4, .1],
                   [.3, .2, .2]], np.float32)


def _rows() -> list[dict]:
    rows = tag_rows(SCORES, TARGETS, np.full(3, 0.5))
    for i, row in enumerate(rows):
        row.update(name=NAMES[i], category=[0, 0, 4][i], count=10 - i, page=f"{i:05d}")
    return rows


def _summary_value(html: str, term: str) -> str:
    return unescape(re.search(f"<dt>{re.escape(term)}</dt><dd>(.*?)</dd>", html).group(1))


def test_tag_pages_say_no_positives_and_show_true_positives(tmp_path):
    (tmp_path / "tags").mkdir()
    val = ValScores([f"k{i}" for i in range(6)], [[] for _ in range(6)], SCORES, TARGETS)
    shown = _tag_pages(tmp_path, val, _rows(), 2)
    absent = (tmp_path / "tags" / "00001.html").read_text()
    assert _summary_value(absent, "AP") == "no positives in validation"
    assert _summary_value(absent, "precision / recall / F1") == "no positives in validation"
    assert "every picture with the tag scores over the threshold" not in absent
    assert "/  /" not in absent
    # The perfect tag: no mistakes to show, but its true positives (the two highest-scoring
    # pictures with the tag: k0 0.9 and k1 0.8), and their thumbnails are wanted.
    perfect = (tmp_path / "tags" / "00000.html").read_text()
    grid = re.search(r'id="true-positives">(.*?)</div></figcaption></figure></div>',
                     perfect).group(0)
    assert re.findall(r'data-key="(k\d)"', grid) == ["k0", "k1"]
    assert {0, 1} <= shown
    mixed = (tmp_path / "tags" / "00002.html").read_text()      # 0.8, 0.6 hit; 0.7 is a fp
    grid = re.search(r'id="true-positives">(.*?)</div></figcaption></figure></div>',
                     mixed).group(0)
    assert re.findall(r'data-key="(k\d)"', grid) == ["k0", "k2"]


def _slice_cells(html: str) -> dict[str, list[str]]:
    table = re.search(r'<table id="slices">(.*?)</table>', html).group(1)
    rows = [re.findall(r"<t[dh]>(.*?)</t[dh]>", r) for r in table.split("</tr>") if r]
    return {r[0]: r[1:3] for r in rows}


def test_the_slice_table_counts_tags_one_way():
    report = score(SCORES, TARGETS, np.array([0, 0, 4]), np.array([10.0, 9.0, 8.0]), 0.5, 1)
    cells = _slice_cells(pages.headline_table(report))
    assert cells["top100"] == cells["all"]                # the same three tags, counted alike
    assert cells["slice"] == ["tags", "with positives"]
    assert cells["all"] == ["3", "2"]                     # every tag; those with positives
    assert cells["category general"] == ["2", "1"] and cells["category character"] == ["1", "1"]


def test_sorting_by_ap_puts_tags_without_one_last(tmp_path):
    from selenium.webdriver.common.by import By
    page = tmp_path / "index.html"
    page.write_text(pages.page("sort", pages.tag_table(_rows()), pages.SORT_JS))
    with chromium() as driver:
        driver.get(page.as_uri())
        header = driver.find_element(By.XPATH, "//table[@id='tags']//th[text()='AP']")
        order = []
        for _ in range(2):                                  # descending, then ascending
            header.click()
            order.append([r.find_element(By.TAG_NAME, "a").text for r in
                          driver.find_elements(By.CSS_SELECTOR, "#tags tbody tr")])
        absent = driver.find_element(By.XPATH, "//tr[td/a[text()='absent']]/td[4]").text
    assert order == [["perfect", "mixed", "absent"], ["mixed", "perfect", "absent"]]
    assert absent == "no positives in validation"
