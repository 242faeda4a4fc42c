# replikit: `make up` runs the cluster, `make test` runs every test. See README.md.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup requirements test lint up serve down status clean demo consistency soak soak-ci restore-experiment bench-backups bench bench-tls bench-failover compose-up compose-down compose-purge \
	compose-logs compose-load compose-monitoring compose-failover compose-rejoin compose-backup compose-restore \
	compose-ha-up compose-ha-down compose-ha-purge compose-ha-logs

setup:
	@bash deploy/setup-host.sh

# The images' pinned Python packages, exported from uv.lock (tests check they match).
UV = $(shell command -v uv || echo .tools/bin/uv)
UV_EXPORT = $(UV) export --frozen --no-dev --no-emit-project --no-header --format requirements-txt
requirements: setup
	$(UV_EXPORT) -o deploy/service/requirements.txt
	$(UV_EXPORT) --extra experiments -o deploy/service/requirements-experiments.txt

# Two pytest-xdist workers: most of the suite waits on servers (failovers, Patroni's lease,
# image builds), so two at once halve the wall time on 2 cores. Each test file stays on one
# worker and every Docker test on the same one (tests/conftest.py). PYTEST_XDIST=-n0: serial.
# The 30 slowest steps are listed at the end, so a run that grows shows where.
PYTEST_XDIST ?= -n 2 --dist loadgroup
test: setup
	$(BIN)/pytest $(PYTEST_XDIST) --durations=30 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	shellcheck -x replication/scripts/*.sh deploy/*.sh deploy/base/*.sh .ci/run

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

# A short failover experiment, a short lag matrix and a short consistency run on a cluster of
# their own (.replikit/demo, ports 6442-6444), then a short restore experiment on an archiving
# cluster of its own (.replikit/restore, ports 6472-6474); about 3.5 minutes on 2 cores;
# results in results/.
DEMO := --data-dir .replikit/demo
demo: setup
	$(BIN)/replikit cluster up $(DEMO) --sync on --base-port 6442
	$(BIN)/replikit experiment failover $(DEMO) --users 6 --duration 25 --kill-at 10
	$(BIN)/replikit experiment lag $(DEMO) --apply-delay 0,1s \
		--consistency eventual,bounded,read_your_writes --users 6 --duration 6
	$(BIN)/replikit experiment consistency $(DEMO) --apply-delay 0,1500ms \
		--consistency eventual,read_your_writes,monotonic --duration 5
	$(BIN)/replikit cluster down $(DEMO)
	$(MAKE) restore-experiment RESTORE_ARGS="--before 6 --after 3"

# Issue 22's restore experiment: uploads under load, every image deleted at T, a restore to
# just before T into a new cluster, which acknowledged uploads came back; on an archiving
# cluster of its own (.replikit/restore, ports 6472-6474; the restored one takes the next free
# ports and is removed at the end), about 1 minute; results in results/restore-*/.
# RESTORE_ARGS="--mistake api" deletes through the API instead of DELETE FROM images.
RESTORE := --data-dir .replikit/restore
RESTORE_ARGS ?=
restore-experiment: setup
	$(BIN)/replikit cluster up $(RESTORE) --archive --base-port 6472
	$(BIN)/replikit experiment restore $(RESTORE) $(RESTORE_ARGS); \
		status=$$?; $(BIN)/replikit cluster down $(RESTORE); exit $$status

# Issue 22's measurements of backups and restore (RPO after losing every node, backup
# throughput and uploads during a full backup, restore seconds per GB of images, archive
# continuity across 5 failovers), each on a scratch cluster of its own, removed afterwards;
# about 15 minutes on 2 cores; results in results/bench-backups-*/. See docs/benchmarks.md.
BACKUP_BENCH_ARGS ?=
bench-backups: setup
	$(BIN)/python -m loadtests.benchmarks.backups $(BACKUP_BENCH_ARGS)

# Issue 15's consistency experiment: read-your-writes and monotonic-read anomalies, lost writes
# and the cost of each consistency mode, clients spread over 2 instances, replicas 0 and 1.5 s
# behind; on a cluster of its own (.replikit/consistency, ports 6452-6454), about 1.5 minutes
# on 2 cores; results in results/consistency-*/. CONSISTENCY_ARGS="--failover" adds a failover
# per mode.
CONSISTENCY := --data-dir .replikit/consistency
CONSISTENCY_ARGS ?=
consistency: setup
	$(BIN)/replikit cluster up $(CONSISTENCY) --sync on --base-port 6452
	$(BIN)/replikit experiment consistency $(CONSISTENCY) $(CONSISTENCY_ARGS)
	$(BIN)/replikit cluster down $(CONSISTENCY)

# Issue 25's soak: an hour of mixed load under a fault about every 5 minutes (seeded), then
# every promise, acknowledged write, error and resource trend checked; on a cluster of its own
# (.replikit/soak, ports 6462-6464); results in results/soak-*/. SOAK_ARGS="--seed 2" etc.
# soak-ci: the same for 3 minutes with a fault every 30 s (about 3.5 minutes in all).
SOAK := --data-dir .replikit/soak
SOAK_ARGS ?=
soak: setup
	$(BIN)/replikit cluster up $(SOAK) --sync on --base-port 6462
	$(BIN)/replikit experiment soak $(SOAK) --duration 60m $(SOAK_ARGS); \
		status=$$?; $(BIN)/replikit cluster down $(SOAK); exit $$status

soak-ci: setup
	$(BIN)/replikit cluster up $(SOAK) --sync on --base-port 6462
	$(BIN)/replikit experiment soak $(SOAK) --duration 3m --fault-every 30s $(SOAK_ARGS); \
		status=$$?; $(BIN)/replikit cluster down $(SOAK); exit $$status

# Issue 13's side-by-side bench (service vs bare ASGI app, Pgpool-II, multi-host URLs, pgbench)
# on a scratch cluster of its own; about 8 minutes on 2 cores; results in results/bench-*/.
# BENCH_ARGS="--quick" for a one-round look. Installs wrk and pgpool2 with apt when missing.
BENCH_ARGS ?=
bench: setup
	$(BIN)/replikit bench $(BENCH_ARGS)

# Issue 23's TLS cost: a --tls on and a --tls off cluster side by side, rounds alternating
# (one service worker's reads, connection set-up, pg_basebackup rate); about 4 minutes on
# 2 cores; results in results/bench-tls-*/. See docs/benchmarks.md.
TLS_BENCH_ARGS ?=
bench-tls: setup
	$(BIN)/python -m loadtests.benchmarks.tls_cost $(TLS_BENCH_ARGS)

# Failover as a client sees it (fault -> first acknowledged upload), on clusters of its own,
# removed afterwards; results in results/bench-failover-*/. FAILOVER_ARGS picks the targets,
# faults and measure, e.g. "--target patroni --measure phases"; see docs/benchmarks.md.
FAILOVER_ARGS ?= --target native --rounds 5
bench-failover: setup
	$(BIN)/python -m loadtests.benchmarks.failover $(FAILOVER_ARGS)

# Docker compose, on compose v2 or v1 (detected; REPLIKIT_COMPOSE overrides). compose-up
# installs Docker when missing (as root), starts the engine when nothing runs it, writes .env
# with generated passwords when there is none, builds every image from one Debian base and
# returns once every service is healthy. See docs/compose.md.
COMPOSE_STATE := --data-dir .replikit/compose
NODE ?= pg0
compose-up: setup
	@bash deploy/docker-host.sh
	$(BIN)/replikit compose up

compose-down: setup
	$(BIN)/replikit compose down

# Also removes the database volumes: every image and row in the stack is gone.
compose-purge: setup
	$(BIN)/replikit compose down --volumes

compose-logs: setup
	$(BIN)/replikit compose logs

compose-monitoring: setup
	@bash deploy/docker-host.sh
	$(BIN)/replikit compose up --profile monitoring

# A headless Locust run through the load balancer; see docs/experiments.md.
compose-load: setup
	@bash deploy/docker-host.sh
	$(BIN)/replikit compose load

# Crash the compose primary and fail over with the same replikit cluster commands, through the
# compose driver (process control by docker compose, everything else over SQL).
compose-failover: setup
	$(BIN)/replikit cluster attach-compose $(COMPOSE_STATE)
	$(BIN)/replikit cluster kill primary $(COMPOSE_STATE)
	$(BIN)/replikit cluster failover $(COMPOSE_STATE)
	$(BIN)/replikit cluster status $(COMPOSE_STATE)
	@echo "Bring the old primary back as a replica with: make compose-rejoin NODE=<node>"

compose-rejoin: setup
	$(BIN)/replikit cluster rejoin $(NODE) $(COMPOSE_STATE)
	$(BIN)/replikit cluster status $(COMPOSE_STATE)

# Backups of the compose stack (docs/backup.md, "Compose stacks"): every node archives WAL
# into the volume backup-repo; compose-backup takes a backup (TYPE=full|diff|incr), lists the
# backups and the recoverable window. compose-restore builds a NEW stack (project
# PROJECT, default <project>-restored; state and .env in INTO) from them, recovered to TO (an
# ISO time) or, without TO, to the latest archived WAL; the source stack is not touched.
TYPE ?= full
INTO ?= .replikit/compose-restored
compose-backup: setup
	$(BIN)/replikit cluster attach-compose $(COMPOSE_STATE)
	$(BIN)/replikit backup --type $(TYPE) $(COMPOSE_STATE)
	$(BIN)/replikit backup list $(COMPOSE_STATE)

compose-restore: setup
	$(BIN)/replikit cluster attach-compose $(COMPOSE_STATE)
	$(BIN)/replikit restore --from .replikit/compose --data-dir $(INTO) \
		$(if $(TO),--to "$(TO)",--latest) $(if $(PROJECT),--project $(PROJECT))

# The HA variant (deploy/compose/ha.yml): 3 etcd members and 3 Patroni nodes, which fail over
# by themselves; project <directory>-ha, so its volumes never meet the default stack's. It
# publishes the same ports as the default stack: run one of the two at a time (or give one
# another --env-file). See docs/operations.md, "Compose HA variant".
compose-ha-up: setup
	@bash deploy/docker-host.sh
	$(BIN)/replikit compose up --variant ha

compose-ha-down: setup
	$(BIN)/replikit compose down --variant ha

compose-ha-purge: setup
	$(BIN)/replikit compose down --variant ha --volumes

compose-ha-logs: setup
	$(BIN)/replikit compose logs --variant ha
