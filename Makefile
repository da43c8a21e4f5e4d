# fastap-repro: `make test` and `make reproduce` set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# Pinned for the install CI uses; pyproject.toml declares ranges for users.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: test reproduce lint bench clean install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: install
	$(PY) -m pytest -q

reproduce: install
	$(VENV)/bin/fastap reproduce

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_fastap.py
	$(PY) benchmarks/bench_recall.py
	$(PY) benchmarks/bench_convert.py

clean:
	rm -rf $(VENV) out .pytest_cache
