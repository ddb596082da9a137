# UniGeo: the README's two commands are `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
SLUG := unigeo
OUT ?= out
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

PHONY_EXTRA := qgis-smoke
.PHONY: setup test test-slow test-gpu lint format demo package package-offline qgis model data bench clean help $(PHONY_EXTRA)

help:
	@echo "make demo     run the main job headless on a real raster (writes $(OUT)/demo)"
	@echo "make test     lint + test suite (excludes slow and gpu tests)"
	@echo "make setup    install Debian packages and the .venv (done by the other targets)"
	@echo "make package  the plugin zip for the QGIS repository (no model) and the model zip, in dist/"
	@echo "make package-offline  also the plugin zip with the default model inside (Install from ZIP)"
	@echo "make qgis     install the plugin into your QGIS profile and start QGIS"
	@echo "make model / make data / make bench   rebuild the model, the dataset, the benchmarks"

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: setup lint
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py --out $(OUT)/demo

data: setup
	bash scripts/make_data.sh

bench: setup
	bash scripts/bench.sh

model: setup
	bash scripts/make_model.sh

package: setup
	@PY=$(PY) bash scripts/package.sh $(SLUG)

package-offline: setup
	@PY=$(PY) bash scripts/package.sh $(SLUG) --offline

qgis: setup
	@bash scripts/qgis.sh $(SLUG)

qgis-smoke: setup
	@bash scripts/qgis_smoke.sh

clean:
	rm -rf dist build $(OUT) .pytest_cache .ruff_cache
