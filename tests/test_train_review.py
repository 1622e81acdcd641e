"""`tag review`: the folder's state and its edits on disk, the HTTP API, then the page in a
real browser: reject a tag on one image, add one to a selection, reload, check the files."""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request

import pytest
from PIL import Image
from support.browser import chromium, screenshot
from support.report_fixtures import cached_run
from support.review_server import Served, post_json

from shards import read_shards
from train.tag.cli import main as tag_main
from train.tag.review.cli import build_parser, prepare
from train.tag.review.server import make_app


@pytest.fixture
def folder(tmp_path_factory, tmp_path):
    """Five validation pictures as PNG files and one file that is not an image."""
    run = cached_run(tmp_path_factory)
    images = tmp_path / "pics"
    images.mkdir()
    samples = read_shards(run.parent / "shards", "val", image="bytes")
    for n, sample in zip(range(5), samples, strict=False):
        Image.open(io.BytesIO(sample["image"])).save(images / f"img{n}.png")
    (images / "broken.png").write_bytes(b"not a picture")
    return run, images


def _prepared(run, images):
    return prepare(build_parser().parse_args([str(images), "--model", str(run)]))


def _corrections(images):
    path = images / ".review" / "corrections.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_first_start_predicts_and_writes_missing_captions(folder):
    run, images = folder
    (images / "img0.txt").write_text("my_tag, circle\n")
    store, info, predicted, written = _prepared(run, images)
    assert predicted == 6 and written == 4                 # img0 keeps its own caption
    assert (images / "img0.txt").read_text() == "my_tag, circle\n"
    states = {s["path"]: s for s in map(store.state, range(len(store.images)))}
    assert states["img0.png"]["caption"] == ["my_tag", "circle"]
    assert "not an image file" in states["broken.png"]["error"]
    assert states["img1.png"]["predicted"] and states["img1.png"]["error"] is None
    assert "prep make-shards --folder" in info["retrain"] and "--init-from" in info["retrain"]
    again = _prepared(run, images)                          # nothing predicted twice
    assert again[2] == 0 and again[3] == 0


def test_an_edit_saves_the_caption_and_a_correction_and_never_overwrites_a_changed_file(
        folder):
    run, images = folder
    store, _, _, _ = _prepared(run, images)
    i = store.relative.index("img1.png")
    state = store.state(i)
    result = store.edit(i, state["version"], ["added_tag"], state["caption"][:1])
    assert result["status"] == "saved"
    text = (images / "img1.txt").read_text().strip()
    assert text.split(", ") == state["caption"][1:] + ["added_tag"]
    [entry] = _corrections(images)
    assert entry["image"] == "img1.png" and entry["added"] == ["added_tag"]
    assert entry["removed"] == state["caption"][:1] and entry["caption"] == text
    # Someone edits the caption in another program: the stale edit is refused, file kept.
    (images / "img1.txt").write_text("edited_elsewhere\n")
    result = store.edit(i, result["image"]["version"], ["x"], [])
    assert result["status"] == "conflict" and "changed on disk" in result["message"]
    assert result["image"]["caption"] == ["edited_elsewhere"]
    assert (images / "img1.txt").read_text() == "edited_elsewhere\n"
    assert len(_corrections(images)) == 1
    assert store.edit(i, result["image"]["version"], ["x"], [])["status"] == "saved"
    # A caption written with spaces (`tag --underscores-to-spaces`) keeps its spelling.
    (images / "img4.txt").write_text("red background, my tag\n")
    j = store.relative.index("img4.png")
    state = store.state(j)
    assert state["caption"] == ["red_background", "my tag"]
    assert store.edit(j, state["version"], ["blue_background"], [])["status"] == "saved"
    assert (images / "img4.txt").read_text() == "red background, my tag, blue background\n"


def test_the_api_over_http(folder):
    run, images = folder
    store, info, _, _ = _prepared(run, images)
    served = Served(make_app(store, info))
    try:
        with urllib.request.urlopen(served.url + "api/state", timeout=30) as r:
            state = json.loads(r.read())
        assert len(state["images"]) == 6 and len(state["tags"]) == len(store.names)
        ids = [s["id"] for s in state["images"] if s["path"] in ("img2.png", "img3.png")]
        items = [{"id": i, "version": state["images"][i]["version"]} for i in ids]
        reply = post_json(served.url + "api/edit", {"items": items, "add": ["red, background"]})
        assert [r["status"] for r in reply["results"]] == ["saved", "saved"]
        assert [r["unknown"] for r in reply["results"]] == [[], []]
        for name in ("img2.txt", "img3.txt"):     # a known tag, in the caption's spelling
            assert (images / name).read_text().strip().endswith("red_background")
        with pytest.raises(urllib.error.HTTPError) as bad:
            post_json(served.url + "api/edit", {"items": "nonsense"})
        assert bad.value.code == 400
        with urllib.request.urlopen(served.url + f"image/{ids[0]}", timeout=30) as r:
            assert r.read() == (images / "img2.png").read_bytes()
    finally:
        served.close()


def test_the_api_names_the_tags_the_model_does_not_know(folder):
    """Known in any caption spelling (as prep make-shards matches them), else unknown: in the
    check asked before a save, in the edit's reply and in the image's state."""
    run, images = folder
    names = (run / "tags.csv").read_text().splitlines()[1:]
    assert "-1,red_background,0" in "\n".join(names) and "star_(symbol)" in "\n".join(names)
    (images / "img0.txt").write_text("red background, not_a_model_tag\n")
    store, info, _, _ = _prepared(run, images)
    served = Served(make_app(store, info))
    try:
        query = urllib.parse.urlencode([("tag", "red background"), ("tag", "star \\(symbol\\)"),
                                        ("tag", "circle"), ("tag", "totally new")])
        with urllib.request.urlopen(served.url + "api/check?" + query, timeout=30) as r:
            check = json.loads(r.read())
        assert check == {"unknown": ["totally new"],
                         "known": {"red background": "red_background",
                                   "star \\(symbol\\)": "star_(symbol)", "circle": "circle",
                                   "totally new": None}}
        with urllib.request.urlopen(served.url + "api/state", timeout=30) as r:
            state = {s["path"]: s for s in json.loads(r.read())["images"]}
        assert state["img0.png"]["unknown"] == ["not_a_model_tag"]
        item = {"id": state["img0.png"]["id"], "version": state["img0.png"]["version"]}
        reply = post_json(served.url + "api/edit", {"items": [item],
                                                "add": ["totally new", "red_background"]})
        [result] = reply["results"]
        assert result["status"] == "saved" and result["unknown"] == ["totally new"]
        assert result["image"]["unknown"] == ["not_a_model_tag", "totally new"]
        # red_background was there already (spelt with a space): not written twice
        assert (images / "img0.txt").read_text() == (
            "red background, not_a_model_tag, totally new\n")
    finally:
        served.close()


def test_a_caption_in_prompt_spelling_is_read_and_written_back_in_it(tmp_path):
    """`tag --underscores-to-spaces --escape-parentheses` captions: known tags are found in
    them, an edit writes the file back in that spelling, an unknown tag stays as written."""
    from train.tag.review.store import ReviewStore
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("diamond \\(shape\\), my_thing\n")
    store = ReviewStore(tmp_path, predictions={}, names=["diamond_(shape)", "red_background"],
                        categories={"diamond_(shape)": 0, "red_background": 0}, thresholds={})
    state = store.state(0)
    assert state["caption"] == ["diamond_(shape)", "my_thing"]
    assert state["unknown"] == ["my_thing"]
    result = store.edit(0, state["version"], ["red background", "diamond (shape)"], [])
    assert result["status"] == "saved" and result["unknown"] == []
    assert (tmp_path / "a.txt").read_text() == (
        "diamond \\(shape\\), my_thing, red background\n")


def test_bad_input_is_one_line(tmp_path, capsys):
    assert tag_main(["review", str(tmp_path / "none"), "--model", str(tmp_path)]) == 2
    assert "not a folder of images" in capsys.readouterr().err


def test_review_in_the_browser(folder, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    run, images = folder
    (images / "img0.txt").write_text("circle, border, my_own_tag\n")   # a caption to judge
    store, info, _, _ = _prepared(run, images)
    served = Served(make_app(store, info))
    try:
        with chromium(1100, 800) as driver:
            # A saved card is drawn anew: an element found before then goes stale, so each
            # wait looks its elements up again until the condition holds.
            wait = WebDriverWait(driver, 20,
                                 ignored_exceptions=(StaleElementReferenceException,))
            driver.get(served.url)
            cards = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card"))
            assert len(cards) == 6
            states = [store.state(i) for i in range(len(store.images))]
            first = min(states, key=lambda s: (s["uncertainty"], s["id"]))
            assert cards[0].get_attribute("data-path") == first["path"]   # most uncertain
            broken = driver.find_element(By.CSS_SELECTOR, '.card[data-path="broken.png"]')
            assert "unreadable" in broken.text
            # Reject the first caption tag of img0.
            card = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img0.png"]')
            chip = card.find_element(By.CSS_SELECTOR, ".chip.in-caption")
            rejected = chip.get_attribute("data-tag")
            chip.find_element(By.CSS_SELECTOR, ".reject").click()
            wait.until(lambda d: "saved" in d.find_element(By.ID, "status").text)
            # Select img1 and img2 (a click and the keyboard), add a tag to both.
            driver.find_element(By.CSS_SELECTOR, '.card[data-path="img1.png"] .select').click()
            card2 = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img2.png"]')
            driver.execute_script("arguments[0].focus()", card2)
            card2.send_keys("x")
            assert driver.find_element(By.ID, "selected-count").text == "2"
            driver.find_element(By.ID, "bulk-tag").send_keys("needs_fix")
            driver.find_element(By.ID, "bulk-add").click()      # not a model tag: asked first
            wait.until(lambda d: "not in the model's tags.csv" in d.find_element(
                By.ID, "status").text)
            assert "needs_fix" not in (images / "img1.txt").read_text()
            driver.find_element(By.ID, "bulk-add").click()
            wait.until(lambda d: d.find_element(By.ID, "status").text == "saved 2 captions")
            # A caption tag the model does not know is marked; so is one typed, before saving.
            card = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img0.png"]')
            marked = [c.get_attribute("data-tag") for c in
                      card.find_elements(By.CSS_SELECTOR, ".chip.in-caption.unknown")]
            assert marked == ["my_own_tag"]
            typed = card.find_element(By.CSS_SELECTOR, ".add-tag")
            typed.send_keys("no_such_tag")
            wait.until(lambda d: "unknown" in typed.get_attribute("class"))
            before = (images / "img0.txt").read_text()
            typed.send_keys(Keys.ENTER)
            wait.until(lambda d: "not in the model's tags.csv" in d.find_element(
                By.ID, "status").text)
            assert (images / "img0.txt").read_text() == before          # nothing saved yet
            typed.send_keys(Keys.ENTER)                                    # yes, save it
            wait.until(lambda d: d.find_element(By.ID, "status").text == "saved 1 caption")
            assert "no_such_tag" in (images / "img0.txt").read_text()
            card = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img0.png"]')
            typed = card.find_element(By.CSS_SELECTOR, ".add-tag")
            typed.send_keys("red background")                              # a known tag
            typed.send_keys(Keys.ENTER)
            wait.until(lambda d: "red_background" in (images / "img0.txt").read_text())
            img0 = '.card[data-path="img0.png"]'
            wait.until(lambda d: "red_background" in [
                c.get_attribute("data-tag")
                for c in d.find_elements(By.CSS_SELECTOR, f"{img0} .chip.in-caption")])
            wait.until(lambda d: "unknown" not in d.find_element(
                By.CSS_SELECTOR, f"{img0} .add-tag").get_attribute("class"))
            screenshot(driver, tmp_path, "review.png")
            driver.refresh()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 6)
            chips = {c.get_attribute("data-path"): [x.get_attribute("data-tag") for x in
                     c.find_elements(By.CSS_SELECTOR, ".chip.in-caption")]
                     for c in driver.find_elements(By.CSS_SELECTOR, ".card")}
            assert rejected not in chips["img0.png"]
            assert "needs_fix" in chips["img1.png"] and "needs_fix" in chips[
                "img2.png"]
            # A caption changed on disk meanwhile: the app says so and shows the new one.
            (images / "img1.txt").write_text("changed_on_disk\n")
            card1 = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img1.png"]')
            card1.find_element(By.CSS_SELECTOR, ".chip.in-caption .reject").click()
            wait.until(lambda d: "changed on disk" in d.find_element(By.ID, "status").text)
            card1 = driver.find_element(By.CSS_SELECTOR, '.card[data-path="img1.png"]')
            assert [x.get_attribute("data-tag") for x in card1.find_elements(
                By.CSS_SELECTOR, ".chip.in-caption")] == ["changed_on_disk"]
    finally:
        served.close()
    assert rejected not in (images / "img0.txt").read_text().split(", ")
    assert "needs_fix" in (images / "img2.txt").read_text()
    assert (images / "img1.txt").read_text() == "changed_on_disk\n"
    log = _corrections(images)
    assert [e["image"] for e in log] == ["img0.png", "img1.png", "img2.png", "img0.png",
                                         "img0.png"]
    assert log[3]["added"] == ["no_such_tag"] and log[4]["added"] == ["red_background"]
    assert log[0]["removed"] == [rejected]
