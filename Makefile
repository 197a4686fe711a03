# Two targets for a fresh clone: `make demo` and `make test`. Each sets up .venv first.
# GPU users: `make test TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`,
# or TORCH= (empty) to keep whatever torch the venv already has.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
WORDNET := wordnet-base wordnet-sense-index
BROWSER := chromium
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test

install: $(VENV)/.installed

# The editable install copies the remote-code files (the root *_saerad.py) into site-packages (hatch force-include),
# where they shadow the checkout's: a change to them reinstalls.
$(VENV)/.installed: pyproject.toml $(wildcard *_saerad.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH); fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@# METEOR needs WordNet; Debian ships it (best effort: only as root with apt-get, else METEOR is skipped).
	@if [ ! -e /usr/share/wordnet/data.noun ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq --no-install-recommends $(WORDNET) || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(WORDNET))) >/dev/null 2>&1 || \
	  echo "WordNet could not be installed: METEOR will be skipped"; fi
	@# The Space's browser test drives Debian's Chromium (Playwright never downloads its own browser here).
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq --no-install-recommends $(BROWSER) || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BROWSER))) >/dev/null 2>&1 || \
	  echo "Chromium could not be installed: the Space's browser test will be skipped"; fi
	touch $@

demo: install
	$(BIN)/saerad demo

test: install
	$(BIN)/python -m pip check
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
