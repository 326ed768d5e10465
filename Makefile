# One place for the commands the README gives. A fresh machine needs only Python ≥ 3.11 and pip.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: a CPU wheel where pip's find-links offers one (this project's machines), the CUDA build from PyPI elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install browser run lint test test-gpu test-slow bench

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
