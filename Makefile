# Targets create .venv when missing and are quick when it is there.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# `cpu` and `gpu` extras are mutually exclusive (same import modules); this Makefile installs `cpu`.
EXTRAS_SERVE := cpu,align
EXTRAS_TEST := cpu,align,train,dev

.PHONY: serve test lint clean

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

lint: $(BIN)/.test-stamp
	$(BIN)/ruff check lrface service training tests
	$(BIN)/mypy lrface service training

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
