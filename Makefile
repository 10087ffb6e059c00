# Each target sets up .venv on first use, so every one is a single command on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT ?= true

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)


install: $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist worksteal

lint: $(STAMP)
	$(VENV)/bin/ruff check ignite_sweep tests benchmarks

demo: $(STAMP)
	@id=$$(WANDB_MODE=offline $(VENV)/bin/ignite-sweep create sweeps/quickstart.yaml | tail -1) && \
	WANDB_MODE=offline $(VENV)/bin/ignite-sweep agent $$id && \
	$(VENV)/bin/ignite-sweep status $$id

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) .ignite-sweep wandb
