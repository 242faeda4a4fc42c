# replikit: `make up` runs the cluster, `make test` runs every test. See README.md.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup test lint up serve down status clean demo compose-up compose-down compose-logs compose-load compose-monitoring compose-failover

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

# Docker compose (needs a Docker engine and a .env with the three passwords; see README).
COMPOSE ?= docker compose
compose-up:
	$(COMPOSE) up -d --build --wait
	@echo "API: http://127.0.0.1:$${REPLIKIT_HTTP_PORT:-8080}/api/v1/images  docs: http://127.0.0.1:$${REPLIKIT_HTTP_PORT:-8080}/docs"

compose-down:
	$(COMPOSE) --profile loadtest --profile monitoring down

compose-load:
	$(COMPOSE) --profile loadtest up -d --build locust-master locust-worker
	@echo "Locust: http://127.0.0.1:$${REPLIKIT_LOCUST_PORT:-8089}"

compose-monitoring:
	$(COMPOSE) --profile monitoring up -d
	@echo "Grafana: http://127.0.0.1:$${REPLIKIT_GRAFANA_PORT:-3000} (admin / REPLIKIT_GRAFANA_PASSWORD)"

compose-logs:
	$(COMPOSE) logs --follow --tail=100

# Crash the compose primary and fail over with the same replikit cluster commands, through the
# compose driver (process control by docker compose, everything else over SQL).
COMPOSE_STATE := --data-dir .replikit/compose
compose-failover: setup
	$(BIN)/replikit cluster attach-compose $(COMPOSE_STATE)
	$(BIN)/replikit cluster kill primary $(COMPOSE_STATE)
	$(BIN)/replikit cluster failover $(COMPOSE_STATE)
	$(BIN)/replikit cluster status $(COMPOSE_STATE)
	@echo "Bring the old primary back with: .venv/bin/replikit cluster rejoin <node> $(COMPOSE_STATE)"
