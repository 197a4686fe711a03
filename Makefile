# Two targets for a fresh clone: `make demo` and `make test`. Each sets up .venv first.
# GPU users: `make test TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`,
# or TORCH= (empty) to keep whatever torch the venv already has.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH); fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

demo: install
	$(BIN)/saerad --help
	$(BIN)/python examples/tiny_generate.py

test: install
	$(BIN)/python -m pytest -q
