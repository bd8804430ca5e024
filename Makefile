# groundwire — the two commands a new user needs are `make run` and `make test`.
# Everything they need is installed from here: the virtual environment (pinned by
# requirements.lock), the npm tools (buf), and redis-server from Debian's packages.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test check lint format generate check-generated breaking redis-server clean bench bench-generate eval

## run: serve on embedded defaults (Qdrant Edge in ./data, local MiniLM, Redis when present)
run: $(VENV)/.installed
	@scripts/run.sh

## test: set everything up on a fresh machine, then run the whole suite
test: $(VENV)/.installed redis-server
	$(PY) -m pytest -q

## check: every static check CI runs (buf lint/format/breaking, drift, ruff, mypy strict)
check: lint check-generated breaking

# requirements.lock pins every package (torch included), so nothing pulls in a second torch.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c requirements.lock -e ".[local,dev]"
	@touch $@

# `npm ci` rejects this lock (npm 11 drops the other platforms' optional buf binaries from it);
# buf is pinned exactly in package.json, so `npm install` resolves the same version.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

lint: $(VENV)/.installed node_modules/.installed
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.installed node_modules/.installed
	$(BUF) format -w
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## generate: regenerate the committed stubs from protos/
generate: $(VENV)/.installed
	PYTHON=$(PY) scripts/gen_python.sh

## check-generated: fail when the committed stubs differ from what protos/ generate
check-generated: $(VENV)/.installed
	@tmp=$$(mktemp -d); PYTHON=$(PY) scripts/gen_python.sh $$tmp >/dev/null; \
	if diff -r -q $$tmp/groundwire/v1 sdks/python/groundwire/v1 -x __pycache__; then \
	  echo "generated code matches protos/"; rm -rf $$tmp; \
	else echo "generated code is stale: run 'make generate' and commit"; rm -rf $$tmp; exit 1; fi

## breaking: buf breaking against main (the last landed contract)
breaking: node_modules/.installed
	@if git rev-parse -q --verify main >/dev/null; then \
	  $(BUF) breaking --against '.git#branch=main'; \
	else echo "no main branch to compare with; skipping buf breaking"; fi

bench: $(VENV)/.installed redis-server
	$(PY) bench/retrieval_bench.py

## bench-generate: Generate beside direct AsyncOpenAI against one scripted upstream (~2.5 min)
bench-generate: $(VENV)/.installed
	$(PY) bench/generate_bench.py

eval: $(VENV)/.installed
	$(PY) bench/scifact_eval.py

clean:
	rm -rf $(VENV) node_modules data .pytest_cache .mypy_cache .ruff_cache
