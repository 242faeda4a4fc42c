# replikit: `make up` runs the cluster, `make test` runs every test. See README.md.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup test lint up serve down status clean

setup:
	@bash deploy/setup-host.sh

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	shellcheck -x replication/scripts/*.sh deploy/*.sh .ci/run

up: setup
	$(BIN)/replikit cluster up
	$(BIN)/replikit migrate
	$(BIN)/replikit serve --detach

serve: setup
	$(BIN)/replikit serve

down: setup
	$(BIN)/replikit serve --stop
	$(BIN)/replikit cluster down

status: setup
	$(BIN)/replikit cluster status

clean: down
	$(BIN)/replikit cluster down --purge
