# Targets create .venv when missing and are quick when it is there.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# `cpu` and `gpu` extras are mutually exclusive (same import modules); this Makefile installs `cpu`.
EXTRAS_SERVE := cpu,align
EXTRAS_TEST := cpu,align,train,dev

.PHONY: serve test lint reliability image-check clean

$(BIN)/.serve-stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS_SERVE)]'
	touch $@

$(BIN)/.test-stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS_TEST)]'
	touch $@ $(BIN)/.serve-stamp

serve: $(BIN)/.serve-stamp
	$(BIN)/lrface serve

test: $(BIN)/.test-stamp
	$(BIN)/python -m pytest

# Long versions of the reliability checks (figures in RELIABILITY.md); `make test` runs short ones.
reliability: $(BIN)/.test-stamp
	LRFACE_CRASH_ROUNDS=20 LRFACE_FUZZ_EXAMPLES=2000 LRFACE_HAMMER_FACES=2000 $(BIN)/python -m pytest -s \
		tests/test_crash_safety.py tests/test_fuzz.py tests/test_hostile_input.py tests/test_oversized_boxes.py \
		tests/test_auth.py tests/test_gallery.py tests/test_training_loop.py
	$(BIN)/lrface bench load --duration 30 --clients 8 --enroll-fraction 0.2 --out reports/bench/load-30s-8clients.json

# The CPU image's install and commands, outside Docker (a fresh venv: slow).
image-check: $(BIN)/.test-stamp
	$(BIN)/python -m pytest -m image tests/test_image_install.py

lint: $(BIN)/.test-stamp
	$(BIN)/ruff check lrface lrface_cli service training tests
	$(BIN)/mypy lrface lrface_cli service training

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
