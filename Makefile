# One place for the commands the README gives. A fresh machine needs only Python ≥ 3.11 and pip.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: a CPU wheel where pip's find-links offers one (this project's machines), the CUDA build from PyPI elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install browser run lint test test-gpu test-slow test-latest bench bench-gpu

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Report tests render in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

run: install
	$(PY) jobs/sweep_checkpoints.py

lint: install
	$(VENV)/bin/ruff check .

test: install browser
	$(PY) -m pytest -q

test-slow: install browser
	$(PY) -m pytest -q -m slow

test-gpu: install
	$(PY) -m pytest -q -m gpu

# The CI variant that notices the next releases: the newest release of every dependency in pyproject.toml
# (its bounds ignored) in a separate venv, the project on top with --no-deps, then the default tests, whose
# filterwarnings fail on a deprecation our own code calls. torch is what pip can get: on this project's
# machines /etc/xdg/pip caps it at the release on local disk (elsewhere it is PyPI's newest, a CUDA build).
LATEST ?= .venv-latest
DEPENDENCIES = $(shell python3 -c 'import re, shlex, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(*(shlex.quote(re.match(r"[\w.-]+(\[[\w,-]+\])?", d)[0]) for d in p["dependencies"] + p["optional-dependencies"]["test"]))')

test-latest: browser
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager $(DEPENDENCIES)
	$(LATEST)/bin/python -m pip install -q --no-deps -e .
	$(LATEST)/bin/python -m pip freeze --exclude-editable
	$(LATEST)/bin/python -m pytest -q

# Every GPU performance figure in one run (at most 7.5 min on one H100/H200): figure lines, a table against
# the targets, and <folder>/figures.json under artifacts/ (the path is printed). --cpu-smoke is its CPU check.
bench-gpu: install
	$(PY) -m benchmarks.gpu_suite
