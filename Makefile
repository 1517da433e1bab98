# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest system-deps bench clean native native-required

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[native]'
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,native]'
	touch $@ $(STAMP_RUN)

## Set up and start the sidecar on its embedded default config (127.0.0.1:4000).
run: $(STAMP_RUN) native
	$(BIN)/spangate serve $(if $(CONFIG),--config $(CONFIG))

## Set up and run lint, type checks and the whole test suite.
test: $(STAMP_DEV) system-deps lint typecheck native-required pytest

## Compile the hot modules with mypyc (proxy/native.py); a no-op when up to date. Without
## a C compiler the pure modules run; the tests require the compiled ones.
native: $(STAMP_RUN)
	@$(BIN)/python -m proxy.native build

native-required: $(STAMP_DEV)
	@$(BIN)/python -m proxy.native build --required

lint: $(STAMP_DEV)
	$(BIN)/ruff check proxy instrumentation tests bench
	$(BIN)/ruff format --check proxy instrumentation tests bench

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: a broken suite, never a pass.
pytest: $(STAMP_DEV) native-required
	@SPANGATE_NATIVE=required $(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

## Debian packages the integration tests use (Prometheus); needs root or sudo.
system-deps:
	@bash scripts/system-deps.sh

bench: $(STAMP_DEV) native
	@bash bench/run.sh

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache proxy/_native
