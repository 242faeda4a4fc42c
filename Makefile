# replikit: `make up` runs the cluster, `make test` runs every test. See README.md.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup test lint up serve down status clean demo

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

# A short failover experiment and a short lag matrix on a cluster of their own
# (.replikit/demo, ports 6442-6444), about two minutes on 2 cores; results in results/.
DEMO := --data-dir .replikit/demo
demo: setup
	$(BIN)/replikit cluster up $(DEMO) --sync on --base-port 6442
	$(BIN)/replikit experiment failover $(DEMO) --users 6 --duration 25 --kill-at 10
	$(BIN)/replikit experiment lag $(DEMO) --apply-delay 0,1s \
		--consistency eventual,bounded,read_your_writes --users 6 --duration 6
	$(BIN)/replikit cluster down $(DEMO)
