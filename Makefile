# Tollgate — every task a user or CI runs. `make run` and `make test` need nothing but Python 3.11+.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(wildcard protos/tollgate/v1/*.proto)

.PHONY: demo run grpc-tools test screenshots venv protos protos-check buf-lint buf-breaking services-up services-down bench soak clean help

help:
	@echo "make run    - set up and start the gateway (gRPC 127.0.0.1:50051, HTTP 127.0.0.1:8080)"
	@echo "make test   - set up, start PostgreSQL and Redis on loopback, run the whole suite"
	@echo "make protos - regenerate clients/tollgate/v1 from protos/"
	@echo "make screenshots - the console's browser tests, writing docs/screenshots/*.png"
	@echo "make bench  - the side-by-side benchmark (bench/README.md)"
	@echo "make soak   - RELIABILITY's soak scenarios, SOAK_MINUTES (default 30, at most 30) (docs/operations.md)"

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# buf (for the README's `buf curl` lines) comes with `make run` when npm is there; never fatal:
# without npm or a registry, the gateway still starts and one line says how to get buf later.
run: $(STAMP) grpc-tools
	exec $(BIN)/python -m services

# Seed 003's demo users and plans (passwords printed at start), in their own data directory so
# that `make run` stays empty (issue 16).
demo: $(STAMP) grpc-tools
	TOLLGATE_DEMO_DATA=1 TOLLGATE_DATA_DIR=$${TOLLGATE_DATA_DIR:-.tollgate-demo} exec $(BIN)/python -m services

grpc-tools:
	@[ -x node_modules/.bin/buf ] || { command -v npm >/dev/null 2>&1 && $(MAKE) -s node_modules/.bin/buf >/dev/null 2>&1; } \
	  || echo "tollgate: buf is not installed (needs npm; then: make buf-lint) - the README's buf curl lines need it; grpcurl is optional"

node_modules/.bin/buf: package.json
	npm install --no-audit --no-fund --silent
	touch $@

protos: $(STAMP)
	$(BIN)/python -m services.tools.genprotos

protos-check: $(STAMP)
	$(BIN)/python -m services.tools.genprotos --check

buf-lint: node_modules/.bin/buf
	node_modules/.bin/buf lint

buf-breaking: node_modules/.bin/buf
	node_modules/.bin/buf breaking --against '.git#branch=main'

services-up:
	@bash scripts/services-up

services-down:
	@bash scripts/services-down

# Second versions of the official SDKs for docs/clients.md's matrix (tests/clients/test_sdk_versions.py):
# each in its own --target folder, never in the venv; the venv's packages serve their dependencies,
# except what only the older SDKs need (distro).
SDK_VERSIONS := openai==1.109.1 anthropic==0.69.0
SDK_EXTRA_openai := distro==1.9.0
SDK_EXTRA_anthropic := distro==1.9.0
SDK_STAMPS := $(foreach v,$(SDK_VERSIONS),.sdk/$(subst ==,-,$(v))/.installed)

.sdk/%/.installed: | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --target .sdk/$* \
	  $(subst -,==,$*) $(SDK_EXTRA_$(firstword $(subst -, ,$*)))
	touch $@

test: $(STAMP) node_modules/.bin/buf $(SDK_STAMPS)
	@command -v valgrind >/dev/null || bash scripts/valgrind-up  # the instruction gate (bench/gate.py)
	@bash scripts/browser-up >/dev/null
	@eval "$$(bash scripts/services-up)" && export DATABASE_URL REDIS_URL && \
	  $(BIN)/python -m pytest -q -p no:randomly $(PYTEST_ARGS)

# The console's pictures in docs/screenshots/ (1440x900), taken by its browser tests.
screenshots: $(STAMP)
	@bash scripts/browser-up >/dev/null
	TOLLGATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q -p no:randomly tests/gateway_http/console/test_browser.py

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

soak: $(STAMP)
	@eval "$$(bash scripts/services-up)" && export DATABASE_URL REDIS_URL && \
	  SOAK_MINUTES=$${SOAK_MINUTES:-30} $(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) node_modules build .sdk *.egg-info
