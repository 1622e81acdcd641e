# make test: create the venv, install the project with its test tools (and a headless browser
#            for the browser tests), lint, run the tests but the heavy ones (a few minutes).
# make test-all: the same with the `heavy` tests too (wheel builds, a Ray cluster, the S3
#            server, the full demo, two-rank torchrun); .ci/run runs both.
# make demo: run the offline end-to-end pipeline against the bundled booru emulator.
# Another interpreter: make test PYTHON=python3.12 (its own venv, .venv-python3.12).
PYTHON ?= python3.11
VENV := $(if $(filter python3.11,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The tests run in parallel, one process per core; a module's tests stay on one worker so
# that the runs they share are trained once.
PYTEST_ARGS ?= -n auto --dist loadfile
# What `make test` leaves out (pyproject.toml declares the marker).
FAST_MARKERS ?= not heavy

.PHONY: test test-all test-heavy demo lint browser wd-consumer bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian's chromium and its driver for the browser tests; skipped (and those tests skip with a
# reason) where apt-get is missing or we are not root.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "no chromium: the browser tests will be skipped"

# A real consumer of `train export --format wd-onnx`: dghs-imgutils, in its own venv because it
# pins numpy<2 (tests/test_export_wd.py runs it there; the test skips without it).
WD_VENV := .venv-wd
$(WD_VENV)/.installed:
	test -x $(WD_VENV)/bin/python || $(PYTHON) -m venv $(WD_VENV)
	$(WD_VENV)/bin/python -m pip install --quiet dghs-imgutils==0.19.0 'onnxruntime>=1.22,<2' \
	  && touch $@ || echo "no dghs-imgutils: its consumer test will be skipped"

wd-consumer: $(WD_VENV)/.installed

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) browser wd-consumer lint
	$(PY) -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Only the heavy tests (what test-all adds to test).
test-heavy: $(STAMP) browser wd-consumer lint
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

test-all: $(STAMP) browser wd-consumer lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf .venv .venv-* build dist *.egg-info .pytest_cache .ruff_cache demo-out
