# t2iguard: one command to run the main job, one to run the tests (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test install install-dev lint typecheck bench clean

# torch is installed first and pinned to the CPU build: a later dependency that asks for torch
# (diffusers, transformers) must never pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Main job: the stack on its built-in example prompts and images, printing decisions, then the
## whole stack around the bundled tiny model: generation, output check, regeneration with guidance.
demo: install
	$(VENV)/bin/t2iguard demo
	$(VENV)/bin/t2iguard generate "a knife and an apple on a blue background" --seed 0 -o out/demo-tiny.png

## Tests: lint, type-check, then the test suite.
test: install-dev lint typecheck
	$(VENV)/bin/pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install-dev
	$(VENV)/bin/mypy

## Benchmarks (results in bench/results/); DATA points at ../shared/benchmarks by default.
DATA ?= ../shared/benchmarks
bench: install-dev
	$(PY) bench/bench_latency.py --data $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
