# groundwire — the two commands a new user needs are `make run` and `make test`.
# Everything they need is installed from here: the virtual environment (pinned by
# requirements.lock), the npm tools (buf), and redis-server from Debian's packages.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# Code generators and SDK toolchains, pinned and installed into the project (not the system).
TOOLS := $(CURDIR)/.tools/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# kustomize renders the Kubernetes overlays (v5.8.2 and later need Go 1.27).
KUSTOMIZE_VERSION := v5.8.1
# The manifests are validated against the oldest Kubernetes they claim (1.30: the preStop
# sleep action) and the newest whose schemas kubernetes-validate carries.
KUBERNETES_VERSIONS := 1.30.0 1.37.0
TS_SDK := sdks/typescript
GO_SDK := sdks/go
LOADGEN := bench/loadgen
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test check lint format generate check-generated breaking redis-server clean bench eval eval-gate sdk-deps \
	deploy-check imports

## run: serve on embedded defaults (Qdrant Edge in ./data, local MiniLM, Redis when present)
run: $(VENV)/.installed
	@scripts/run.sh

## test: set everything up on a fresh machine, then run the whole suite (the SDK scenarios in
## Python, Go and TypeScript against a live server included)
test: $(VENV)/.installed redis-server sdk-deps
	$(PY) -m pytest -q

## check: every static check CI runs (buf lint/format/breaking, drift, ruff, mypy strict,
## import cycles and layers, the deployment files)
check: lint imports check-generated breaking deploy-check

## imports: no import cycle among groundwire's modules (function-level imports count), and no
## import across a layer (sdk/contract → nothing else; clients → no server; server → no tools
## or test support; tools → no server): scripts/check_imports.py
imports: $(VENV)/.installed
	$(PY) scripts/check_imports.py

# requirements.lock pins every package (torch included), so nothing pulls in a second torch.
# The torch extra is for the parity tests (ONNX against torch) and GROUNDWIRE_EMBEDDER=local-torch.
# scripts/pip_install.py: pip's lines, and one every few seconds while it is quiet (a download
# of torch takes minutes), also when the output is not a terminal.
# The four distributions (server, SDK, tools, test support) are installed editable, with the
# dev dependency group of the workspace's pyproject.toml (pip >= 25.1 reads --group).
DISTRIBUTIONS := server/pyproject.toml sdks/python/pyproject.toml tools/pyproject.toml \
	testing/pyproject.toml
$(VENV)/.installed: pyproject.toml requirements.lock $(DISTRIBUTIONS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/pip_install.py --upgrade "pip>=25.1"
	$(PY) scripts/pip_install.py -c requirements.lock --group dev -e ./sdks/python \
	  -e "./server[local,torch]" -e ./testing -e ./tools
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
	@for dir in $(GO_SDK) $(LOADGEN); do \
	  unformatted=$$(cd $$dir && gofmt -l .) && [ -z "$$unformatted" ] || \
	  { echo "gofmt would change in $$dir: $$unformatted"; exit 1; }; done
	cd $(GO_SDK) && go vet ./...
	cd $(LOADGEN) && go vet ./...

format: $(VENV)/.installed node_modules/.installed
	$(BUF) format -w
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The SDKs' own dependencies: Go modules (from the module proxy) and the TypeScript packages.
sdk-deps: $(TS_SDK)/node_modules/.installed
	cd $(GO_SDK) && go mod download
	cd $(LOADGEN) && go mod download

$(TS_SDK)/node_modules/.installed: $(TS_SDK)/package.json $(TS_SDK)/package-lock.json
	cd $(TS_SDK) && npm install --no-audit --no-fund --loglevel=error
	@touch $@

## deploy-check: render the Kubernetes overlays and validate every object against the
## Kubernetes OpenAPI schemas, lint the Dockerfile, validate compose.yaml: all offline
deploy-check: $(VENV)/.installed $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION)
	scripts/deploy_check.sh $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION) "$(KUBERNETES_VERSIONS)"

# kustomize at its pinned version, named by it (a new pin installs beside the old one).
$(TOOLS)/kustomize-$(KUSTOMIZE_VERSION):
	gobin=$$(mktemp -d) && \
	  GOBIN=$$gobin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) && \
	  mkdir -p $(TOOLS) && mv $$gobin/kustomize $@ && rmdir $$gobin

# The Go load generator and scripted upstream of `groundwire bench` (which also builds it on
# first use, and again when its sources or the Go SDK's change: the digest beside it says).
$(TOOLS)/loadgen: $(VENV)/.installed $(wildcard $(LOADGEN)/*.go $(LOADGEN)/go.* $(GO_SDK)/groundwire/*.go)
	$(PY) -m groundwire.tools.benchmark.go_loadgen

# protoc-gen-go and protoc-gen-go-grpc at pinned versions, in .tools/bin.
$(TOOLS)/.installed: Makefile
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

GENERATORS := $(VENV)/.installed node_modules/.installed $(TOOLS)/.installed \
	$(TS_SDK)/node_modules/.installed
# Every language's stubs, generated below the directory in $$out (. for the committed ones).
# The internal services (buf.gen.internal.yaml) go beside the server, never into an SDK.
BUF_GENERATE := $(BUF) generate -o $$out && \
	$(BUF) generate -o $$out --template buf.gen.googleapis.yaml && \
	$(BUF) generate -o $$out --template buf.gen.internal.yaml && \
	touch $$out/sdks/python/groundwire/v1/py.typed $$out/server/groundwire/internal/v1/py.typed
GENERATED := sdks/python/groundwire/v1 sdks/go/gen $(TS_SDK)/src/gen server/groundwire/internal/v1

## generate: regenerate the committed stubs (Python, Go, TypeScript) from protos/ with buf
generate: $(GENERATORS)
	rm -rf $(GENERATED)
	out=.; { $(BUF_GENERATE); } 2> >(grep -v '^Writing mypy to' >&2)

## check-generated: fail when the committed stubs differ from what protos/ generate
check-generated: $(GENERATORS)
	@out=$$(mktemp -d); { $(BUF_GENERATE); } 2>/dev/null; stale=0; \
	for dir in $(GENERATED); do \
	  diff -r -q -x __pycache__ $$out/$$dir $$dir || stale=1; done; rm -rf $$out; \
	if [ $$stale = 0 ]; then echo "generated code matches protos/ (Python, Go, TypeScript, internal)"; \
	else echo "generated code is stale: run 'make generate' and commit"; exit 1; fi

## breaking: buf breaking against main (the last landed contract)
breaking: node_modules/.installed
	@if git rev-parse -q --verify main >/dev/null; then \
	  $(BUF) breaking --against '.git#branch=main'; \
	else echo "no main branch to compare with; skipping buf breaking"; fi

SCIFACT := ../shared/datasets/scifact
## eval and bench: the full SciFact beside the checkout when it is there, else the sample in
## the repository (datasets/scifact-sample: 500 abstracts, 100 judged queries); DATASET=DIR
## picks another BEIR folder
DATASET ?= $(if $(wildcard $(SCIFACT)/corpus.jsonl),$(SCIFACT),datasets/scifact-sample)

## eval: retrieval quality per mode on $(DATASET) (nDCG@10, Recall@10/100, MRR@10, latency),
## report and plots in results/eval/<name>; the index in data/eval is reused by the next run
eval: $(VENV)/.installed
	$(VENV)/bin/groundwire eval $(DATASET)

## eval-gate: what CI runs: fails when dense nDCG@10 < 0.64 or hybrid < sparse
eval-gate: $(VENV)/.installed
	$(VENV)/bin/groundwire eval $(SCIFACT) --min-dense-ndcg 0.64 --require-hybrid-ge-sparse

## bench: Retrieve and Generate under load over gRPC beside the direct calls, at concurrency
## 1, 32 and 256; tables, JSON and plots in results/bench
bench: $(VENV)/.installed redis-server $(TOOLS)/loadgen
	$(VENV)/bin/groundwire bench --dataset $(DATASET)

clean:
	rm -rf $(VENV) node_modules data results .pytest_cache .mypy_cache .ruff_cache .tools .hypothesis \
	  $(TS_SDK)/node_modules $(TS_SDK)/dist
