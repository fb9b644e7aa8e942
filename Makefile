# polishd — the two commands a newcomer needs:
#   make demo   set up, then process the sample images in examples/inbox
#   make test   set up, then run the whole test suite (fast tier, slow tier, spandrel tier)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# spandrel (other upscaler architectures) and ultralytics (YOLO detectors) import torchvision, which needs its
# own torch build: their tests run in an environment of their own.
SPANDREL_VENV ?= .venv-spandrel

.PHONY: setup demo test test-fast test-slow test-spandrel bench models clean

$(BIN)/polishd: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps open_clip_torch==3.3.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/polishd

demo: setup
	$(BIN)/polishd --config examples/demo.toml --log-format console --log-level warning process examples/inbox
	@echo "Finished archives: var/demo/archive/ (one folder per image, see manifest.json and the numbered PNGs)"
	@echo "Delivered files:   var/demo/outbox/ (master and story per image, labelled with how they were made; the feed"
	@echo "                   and banner come from variants without a generative model: held until approved in polishd serve)"

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest -m "not slow and not spandrel" -q
	$(BIN)/python -m pytest -m slow -q
	$(MAKE) test-spandrel

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not spandrel" -q

# A tier that collects no test fails (pytest's exit 5): every tier must run something.
test-slow: setup
	$(BIN)/python -m pytest -m slow -q

$(SPANDREL_VENV)/bin/polishd: pyproject.toml requirements-spandrel.lock
	$(PYTHON) -m venv $(SPANDREL_VENV)
	$(SPANDREL_VENV)/bin/pip install --quiet --upgrade pip
	$(SPANDREL_VENV)/bin/pip install --quiet -r requirements-spandrel.lock
	$(SPANDREL_VENV)/bin/pip install --quiet --no-deps ultralytics==8.4.190
	$(SPANDREL_VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

test-spandrel: $(SPANDREL_VENV)/bin/polishd
	$(SPANDREL_VENV)/bin/python -m pytest -m "spandrel or yolo" -q tests/test_spandrel.py tests/test_yolo.py

# Every benchmark in bench/ (results and the CPU they ran on in bench/out/); one whose tools are missing says so
# and is skipped.  Finished experiments are records in docs/decisions/, with their scripts.
BENCHMARKS = spine automask big_image inpaint control upscale upscale_cpu colour checkpoints first_image upscale_large deliver review cluster

bench: setup
	@for b in $(BENCHMARKS); do echo "== bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

models: setup
	$(BIN)/python automask/models/extract.py

clean:
	rm -rf var/demo .pytest_cache
