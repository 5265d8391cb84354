# One command sets everything up and runs the tests from a fresh clone:  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test clean

$(BIN)/lic: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/lic

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
