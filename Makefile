# From a fresh clone:  make demo  (install, then code sample photos with the default codec)
#                      make test  (install, lint with ruff, then run the test suite)
# On a CUDA machine:        make install TORCH_INDEX=https://download.pytorch.org/whl/cu130
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Optional PyTorch wheel index (CUDA builds); empty means the default (CPU here).
TORCH_INDEX ?=

.PHONY: install demo lint test clean

$(BIN)/lic: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/lic

demo: install
	$(BIN)/lic demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
