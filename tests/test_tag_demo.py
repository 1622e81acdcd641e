"""The demo's steps at a tiny scale: emulator, scrape, tag index, shards, train, tag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_tiny_demo_runs_every_step_and_tags_images(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--posts", "300",
                           "--epochs", "1", "--image-size", "48", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    assert "6. tag:" in text and "background: " in text
    assert "every step ran" in text and "missing" not in text.split("6. tag:")[1]
    assert "where everything is" in text
    rows = (out / "tagged.jsonl").read_text().splitlines()
    assert len(rows) == 6
    assert len(list((out / "tagged").glob("*.txt"))) == 6
    assert "images/s" in text
    assert f"{out / 'run' / 'report' / 'index.html'} (" in text      # the evaluation report
    assert f"tag review {out / 'tagged'} --model {out / 'run'}" in text
    # the default start is the ImageNet Lite0 of the [demo] extra, and the demo ends with its AP
    assert "--arch timm:tf_efficientnet_lite0 --weights imagenet --freeze-backbone" in text
    assert "visual-tag macro AP " in text.split("where everything is")[1]
    assert "visual tags (EfficientNet-Lite0 from ImageNet)" in text
