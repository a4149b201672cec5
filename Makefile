# ssd-ray: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install bench constraints clean

# (Re)install when the venv is missing or the package metadata/constraints changed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.train --config configs/shapes.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/loss.py
	$(BIN)/python bench/postprocess.py
	$(BIN)/python bench/data.py

constraints: $(STAMP)
	{ echo "# Exact versions CI, 'make' and cluster set-up install (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate with: make constraints   (pyproject.toml holds the floors)"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' | grep -v '^ssd-ray'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
