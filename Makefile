# polishd — the two commands a newcomer needs:
#   make demo   set up, then process the sample images in examples/inbox
#   make test   set up, then run the whole test suite (fast tier, then the slow tier)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo test test-fast test-slow bench models clean

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

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

bench: setup
	$(BIN)/python -m bench.spine
	$(BIN)/python -m bench.upscale
	$(BIN)/python -m bench.automask
	$(BIN)/python -m bench.inpaint

models: setup
	$(BIN)/python automask/models/extract.py

clean:
	rm -rf var/demo .pytest_cache
