"""dghs-imgutils, a real consumer of WD tagger folders, run on an exported `model.onnx`.

dghs-imgutils pins numpy<2, so it lives in its own environment (`make wd-consumer`, part of
`make test`); the tests run it there as a separate program. Neither its `get_wd14_tags` nor
`wdtagger`'s `Tagger` loads a local folder (both fetch fixed Hugging Face repositories), so the
program drives the package's own preprocessing, model loader and MCut on the local files.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

WD_PYTHON = Path(os.environ.get("BOORU_TAGGER_WD_PYTHON",
                                Path(__file__).resolve().parents[2] / ".venv-wd/bin/python"))
CONSUMER = """
import json, sys
from imgutils.tagging import wd14
from imgutils.utils import open_onnx_model
model, images = sys.argv[1], sys.argv[2:]
session = open_onnx_model(model, "cpu")
_, side, _, _ = session.get_inputs()[0].shape
batch = __import__("numpy").concatenate([wd14._prepare_image_for_tagging(p, side) for p in images])
probs = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: batch})[0]
print(json.dumps({"probs": probs.tolist(),
                  "mcut": [float(wd14._mcut_threshold(row[4:10])) for row in probs]}))
"""


def installed() -> bool:
    return WD_PYTHON.exists()


def run_consumer(model_onnx: Path, images: list) -> dict:
    """{"probs": one row per image, "mcut": dghs' MCut over columns 4-9 of each row}."""
    done = subprocess.run([str(WD_PYTHON), "-c", CONSUMER, str(model_onnx),
                           *[str(p) for p in images]], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
