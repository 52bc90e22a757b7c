# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo test lint typecheck bench compose-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install  ## run jobs/example.yaml end to end against the simulator, on embedded defaults
	$(BIN)/orchestrator demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: lint typecheck  ## everything CI runs
	$(BIN)/pytest -n 2 -m "not serial"
	$(BIN)/pytest -m serial

# Validate docker-compose.yml with the real compose binary (no Docker engine needed): it must
# pass with the required settings and fail without them.
COMPOSE = $(shell $(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))' 2>/dev/null)
compose-check: install
	env -u POSTGRES_PASSWORD -u LEGITSMS_API_KEY POSTGRES_PASSWORD=x LEGITSMS_API_KEY=y $(COMPOSE) -f docker-compose.yml config -q
	@if env -u POSTGRES_PASSWORD -u LEGITSMS_API_KEY $(COMPOSE) -f docker-compose.yml config -q 2>/dev/null; then \
		echo "docker-compose.yml accepted missing required settings" >&2; exit 1; fi
	env -u POSTGRES_PASSWORD -u LEGITSMS_API_KEY POSTGRES_PASSWORD=x LEGITSMS_API_KEY=y $(COMPOSE) -f docker-compose.yml --profile monitoring config -q
	@echo "docker-compose.yml validated (and its monitoring profile: deploy/ is checked by tests/test_monitoring_config.py)"

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .orchestrator out .pytest_cache .mypy_cache .ruff_cache
