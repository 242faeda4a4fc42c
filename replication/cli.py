"""The ``replikit`` command line. Errors from any command are printed here, in one place."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loadtests.experiments.failover_plan import FailoverMode, Fault, plan_failover
from replication import failover as failovers
from replication import faults
from replication.cluster import DEFAULT_DATA_DIR, Cluster, cluster_down, cluster_up, env_lines
from replication.compose_cli import compose_app
from replication.drivers.base import StopMode
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.ports import require_free_ports
from replication.probe import NodeStatus
from replication.topology import Manager, SyncMode, require_state

app = typer.Typer(
    help="Run and experiment with a replicated PostgreSQL service.", no_args_is_help=True
)
cluster_app = typer.Typer(
    help="Local primary-replica cluster of plain PostgreSQL processes.", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")
experiment_app = typer.Typer(
    help="Failover, replica-lag and consistency experiments.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")
app.add_typer(compose_app, name="compose")

# Wide enough for the status table (with the Patroni columns) when output goes to a pipe or a
# file.
console = Console(width=None if Console().is_terminal else 170)
error_console = Console(stderr=True)

DataDirOption = Annotated[
    Path,
    typer.Option("--data-dir", envvar="REPLIKIT_DATA_DIR", help="Where the cluster lives."),
]


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_status(rows: list[NodeStatus]) -> None:
    table = Table(title="replikit cluster")
    columns = [
        "name",
        "port",
        "role",
        "timeline",
        "state",
        "sync_state",
        "lag_bytes",
        "lag_seconds",
        "slot",
        "apply_delay",
        "replay_paused",
        "fenced",
    ]
    if any(row.patroni_role is not None for row in rows):
        columns += ["patroni_role", "patroni_state"]
    for column in columns:
        table.add_column(column, justify="right" if column.startswith(("lag", "port")) else "left")
    for row in rows:
        values = row.to_json()
        table.add_row(*(_fmt(values[column]) for column in columns))
    console.print(table)


@cluster_app.command("up")
def up(
    replicas: Annotated[
        int | None, typer.Option(help="Number of streaming replicas, 0-8 (default 2).")
    ] = None,
    sync: Annotated[
        SyncMode | None,
        typer.Option(help="Synchronous replication: off, on (FIRST 1) or quorum (ANY 1)."),
    ] = None,
    base_port: Annotated[
        int | None, typer.Option(help="Port of pg0; pgN gets base+N (default 6432).")
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    pg_bin: Annotated[
        str | None, typer.Option(help="Directory of the PostgreSQL server programs.")
    ] = None,
    wal_keep_size: Annotated[
        str, typer.Option(help="wal_keep_size of a new cluster, e.g. 256MB or 1GB.")
    ] = "256MB",
    manager: Annotated[
        Manager | None,
        typer.Option(
            help="Who moves the primary role: native (replikit's commands, the default) or "
            "patroni (Patroni agents over a 3-member etcd fail over by themselves)."
        ),
    ] = None,
) -> None:
    """Create (or restart) the primary and its replicas and wait until every one streams."""
    if not re.fullmatch(r"\d+(kB|MB|GB)", wal_keep_size):
        raise BadInputError(
            f"--wal-keep-size takes a size like 256MB or 1GB, not {wal_keep_size!r}."
        )
    _, rows = cluster_up(
        data_dir,
        replicas=replicas,
        sync=sync,
        base_port=base_port,
        pg_bin=pg_bin,
        wal_keep_size=wal_keep_size,
        manager=manager,
    )
    print_status(rows)
    for row in rows:
        if row.fenced and row.role == "down":
            console.print(
                f"{row.name} is fenced (a former primary) and was not started; bring it back "
                f"with 'replikit cluster rejoin {row.name}'."
            )


@cluster_app.command("status")
def status(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each node's discovered role, timeline, replication state and lag."""
    rows = Cluster.open(data_dir).status()
    if as_json:
        print(json.dumps({"nodes": [row.to_json() for row in rows]}, indent=2))
    else:
        print_status(rows)


@cluster_app.command("down")
def down(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    purge: Annotated[bool, typer.Option(help="Also delete the data directory.")] = False,
) -> None:
    """Stop every node with a fast shutdown."""
    if not cluster_down(data_dir, purge=purge):
        console.print(f"No cluster in {data_dir}; nothing to stop.")
        return
    console.print(f"Cluster in {data_dir} stopped{' and deleted' if purge else ''}.")


@cluster_app.command("env")
def env(data_dir: DataDirOption = DEFAULT_DATA_DIR) -> None:
    """Shell export lines for the service: eval "$(replikit cluster env)"."""
    print("\n".join(env_lines(require_state(data_dir.absolute()))))


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@cluster_app.command("attach-compose")
def attach_compose(
    compose_file: Annotated[Path, typer.Option(help="The compose file.")] = Path(
        "docker-compose.yml"
    ),
    env_file: Annotated[
        Path,
        typer.Option(help="The env file the stack was brought up with (passwords and ports)."),
    ] = Path(".env"),
    project_name: Annotated[
        str | None,
        typer.Option(
            "--project-name", "-p", help="Its compose project name, when not compose's default."
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where to keep the compose cluster's state.")
    ] = Path(".replikit/compose"),
) -> None:
    """Record a running docker compose cluster so the cluster commands can act on it."""
    from replication.compose_attach import attach_compose as attach

    state = attach(data_dir, compose_file, env_file, project_name)
    service = f"; service {state.service.url}" if state.service else ""
    console.print(
        f"Compose cluster recorded in {data_dir} (primary {state.primary}{service}); use "
        f"'replikit cluster status --data-dir {data_dir}' and the other cluster commands."
    )


def report(result: dict[str, object], as_json: bool, summary: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(summary)


@cluster_app.command("kill")
def kill(
    node: Annotated[str, typer.Argument(help="Node to stop, e.g. pg0, or 'primary'.")],
    mode: Annotated[StopMode, typer.Option(help="immediate = crash, fast = clean stop.")] = (
        StopMode.IMMEDIATE
    ),
    postgres_only: Annotated[
        bool,
        typer.Option(
            "--postgres-only",
            help="Patroni manager: crash PostgreSQL but leave its agent running (the default "
            "kills both, as a lost machine). The native manager has no agent: no difference.",
        ),
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Crash (default) or stop one node."""
    result = faults.kill(data_dir, node, mode, postgres_only=postgres_only)
    node = str(result["node"])
    kind = "crashed" if mode is StopMode.IMMEDIATE else "stopped"
    report(
        result,
        as_json,
        f"{node} {kind} ({'the primary' if result['was_primary'] else 'a replica'}).",
    )


@cluster_app.command("failover")
def failover(
    to: Annotated[str | None, typer.Option(help="Promote this replica.")] = None,
    force: Annotated[
        bool, typer.Option(help="Fail over even with a live primary or a lagging candidate.")
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Promote a replica after the primary died; fence the old primary, repoint the rest."""
    result = failovers.failover(data_dir, to=to, force=force)
    writable = result["seconds_to_writable"]
    report(
        result,
        as_json,
        f"{result['new_primary']} is the primary on timeline {result['timeline']}; "
        + (
            f"{result['old_primary']} is fenced (rejoin it with 'replikit cluster rejoin "
            f"{result['old_primary']}'). "
            if result["old_primary"] in result["fenced"]
            else f"{result['old_primary']} follows it once its agent runs ('replikit cluster "
            f"rejoin {result['old_primary']}' if it is down). "
        )
        + (
            f"Writes accepted {writable} s after the command started."
            if writable is not None
            else "Writes wait for a synchronous replica: rejoin or start one."
        ),
    )


@cluster_app.command("switchover")
def switchover(
    to: Annotated[str | None, typer.Option(help="The replica to make primary.")] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Planned change of primary with no data loss; the old primary becomes a replica."""
    result = failovers.switchover(data_dir, to=to)
    report(
        result,
        as_json,
        f"{result['new_primary']} is the primary on timeline {result['timeline']}; "
        f"{result['old_primary']} follows it ({result['rejoin_method']}). "
        f"Took {result['duration_seconds']} s.",
    )


@cluster_app.command("rejoin")
def rejoin(
    node: Annotated[str, typer.Argument(help="The stopped or fenced node to rejoin.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Make a former primary (or a stopped replica) stream from the current primary."""
    result = failovers.rejoin(data_dir, node)
    how = {
        "rewound": "rewound with pg_rewind",
        "recloned": "re-cloned with a base backup",
        "unchanged": "no rewind was needed",
    }.get(str(result["method"]), str(result["method"]))
    report(result, as_json, f"{node} streams from {result['primary']} ({how}).")


@cluster_app.command("lag")
def lag(
    node: Annotated[str, typer.Argument(help="The replica to lag.")],
    apply_delay: Annotated[
        str | None, typer.Option(help="Replay delay, e.g. 250ms, 1s (recovery_min_apply_delay).")
    ] = None,
    pause: Annotated[bool, typer.Option("--pause", help="Pause WAL replay.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Resume WAL replay.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="No delay, not paused.")] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Delay or pause a replica's replay; with no option, show what is set."""
    result = faults.lag(data_dir, node, faults.LagChange(apply_delay, pause, resume, clear))
    report(
        result,
        as_json,
        f"{node}: apply delay {result['apply_delay'] or 'none'}, replay "
        f"{'paused' if result['replay_paused'] else 'running'}.",
    )


def show_results(out: Path) -> None:
    """An experiment's summary.md, then where everything else is."""
    console.print((out / "summary.md").read_text())
    console.print(f"Results and plots: {out}")


ResultsOption = Annotated[
    Path, typer.Option("--results", help="Where results/<name>-<timestamp>/ goes.")
]


@experiment_app.command("failover")
def experiment_failover(
    users: Annotated[int, typer.Option(help="Locust users in all.", min=2)] = 10,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 40.0,
    kill_at: Annotated[
        float, typer.Option(help="Seconds into the load to crash the primary.")
    ] = 15.0,
    sync: Annotated[SyncMode, typer.Option(help="Sync mode of a new cluster.")] = SyncMode.ON,
    mode: Annotated[
        FailoverMode | None,
        typer.Option(
            help="Who fails over: manual (the experiment runs cluster failover; native "
            "clusters) or auto (Patroni, unprompted). Default: follows the manager."
        ),
    ] = None,
    manager: Annotated[
        Manager | None,
        typer.Option(help="Manager of a new cluster (default: as the existing one, else native)."),
    ] = None,
    fault: Annotated[
        Fault | None,
        typer.Option(
            help="--mode auto only: node (agent and PostgreSQL, a lost machine; the default) "
            "or postgres (PostgreSQL crashes under a live agent)."
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Crash the primary under load, fail over, and measure what clients and the database saw."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.failover import run_failover

    plan = plan_failover(data_dir.absolute(), manager=manager, mode=mode, fault=fault)
    with cluster_for_experiment(data_dir.absolute()):
        out = run_failover(
            data_dir=data_dir.absolute(),
            results=results,
            users=users,
            duration=duration,
            kill_at=kill_at,
            sync=sync,
            plan=plan,
        )
    show_results(out)


def comma_separated(text: str) -> list[str]:
    """The non-empty items of a comma-separated option."""
    return [item for item in text.split(",") if item.strip()]


@experiment_app.command("lag")
def experiment_lag(
    apply_delay: Annotated[
        str, typer.Option(help="Comma-separated replay delays, e.g. 0,250ms,1s.")
    ] = "0,250ms,1s",
    consistency: Annotated[
        str, typer.Option(help="Comma-separated modes: eventual,bounded,read_your_writes,strong.")
    ] = "eventual,bounded,read_your_writes",
    users: Annotated[int, typer.Option(help="Locust users per cell.", min=2)] = 8,
    duration: Annotated[float, typer.Option(help="Seconds per cell.")] = 15.0,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Run read-after-upload and browse load for each (replay delay, consistency) cell."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.lag import run_lag

    with cluster_for_experiment(data_dir.absolute()):
        out = run_lag(
            data_dir=data_dir.absolute(),
            results=results,
            delays=comma_separated(apply_delay),
            modes=comma_separated(consistency),
            users=users,
            seconds_per_cell=duration,
        )
    show_results(out)


@experiment_app.command("consistency")
def experiment_consistency(
    consistency: Annotated[
        str, typer.Option(help="Comma-separated modes, run in turn.")
    ] = "eventual,bounded,read_your_writes,monotonic,strong",
    apply_delay: Annotated[
        str,
        typer.Option(
            help="Replay delay of each replica in node order, comma-separated (the last "
            "repeats), e.g. 0,1500ms."
        ),
    ] = "0,1500ms",
    clients: Annotated[int, typer.Option(help="Clients, each with its own token.", min=1)] = 6,
    readers: Annotated[
        int, typer.Option(help="How many of the clients only read (never write).", min=0)
    ] = 2,
    instances: Annotated[
        int, typer.Option(help="Service instances the clients alternate between.", min=1)
    ] = 2,
    duration: Annotated[float, typer.Option(help="Seconds per mode.", min=0.5)] = 8.0,
    think: Annotated[str, typer.Option(help="Pause between a client's requests.")] = "25ms",
    failover: Annotated[
        bool, typer.Option("--failover", help="Crash the primary half-way through each mode.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the clients' choices.")] = 1,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Count read-your-writes and monotonic-read anomalies and lost writes per consistency
    mode, with clients spread over several instances and replicas that disagree."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.consistency import ConsistencyRun, run_consistency

    run = ConsistencyRun.parse(
        modes=comma_separated(consistency),
        delays=comma_separated(apply_delay),
        clients=clients,
        readers=readers,
        seconds_per_mode=duration,
        think=think,
        instances=instances,
        failover=failover,
        seed=seed,
    )
    with cluster_for_experiment(data_dir.absolute()):
        out = run_consistency(data_dir=data_dir.absolute(), results=results, run=run)
    show_results(out)


@app.command("migrate")
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    down: Annotated[
        bool, typer.Option("--down", help="Downgrade to REVISION (e.g. base) instead.")
    ] = False,
    wait_for_primary: Annotated[
        float,
        typer.Option(help="Seconds to wait for exactly one node to answer as the primary.", min=0),
    ] = 0.0,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Apply the database migrations on the primary (upgrade to head by default).

    The primary is whichever configured node (REPLIKIT_PRIMARY_URL or a replica URL) is out of
    recovery now, so the command keeps working after a failover. It logs in as the schema's
    owner (REPLIKIT_MIGRATION_USER/PASSWORD, or the local cluster's), not as the service.
    """
    from replication.service_env import resolve_migration_urls
    from service import migrate as migrations

    urls, user = resolve_migration_urls(data_dir)
    try:
        primary_url = migrations.find_primary_url(urls, wait_seconds=wait_for_primary)
    except migrations.MigrationLoginError as error:
        raise BadInputError(
            f"{error}. Check REPLIKIT_MIGRATION_USER and REPLIKIT_MIGRATION_PASSWORD (the schema "
            "owner's; see docs/security.md)."
        ) from None
    if primary_url is None:
        raise ClusterTimeoutError(
            "No single node answered as the primary; check the cluster with 'replikit cluster "
            "status' (or pass --wait-for-primary SECONDS while it starts)."
        )
    if down:
        migrations.downgrade(primary_url, revision)
    else:
        migrations.upgrade(primary_url, revision)
    console.print(f"Database {'downgraded' if down else 'upgraded'} to {revision} (as {user}).")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    ops_host: Annotated[
        str, typer.Option(help="Address of the operations listener (/cluster, /metrics).")
    ] = "127.0.0.1",
    ops_port: Annotated[
        int | None,
        typer.Option(help="Port of the operations listener; default PORT+1, 0 for none."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes; default one per CPU this process may use.",
            min=1,
            envvar="REPLIKIT_WORKERS",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies whose X-Forwarded-For is trusted (comma-separated addresses or "
            "networks); the client is the rightmost address that is not one of them.",
            envvar="REPLIKIT_FORWARDED_ALLOW_IPS",
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option(help="Run in the background; stop with 'replikit serve --stop'.")
    ] = False,
    stop: Annotated[bool, typer.Option(help="Stop the service started with --detach.")] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Run the image service (uvicorn with connection limits; URLs from the environment or
    the local cluster)."""
    # Imported here: the cluster commands should not pay for the service's imports.
    from replication.service_env import resolve_settings
    from replication.service_process import running_service, start_service, stop_service

    data_dir = data_dir.absolute()
    if stop:
        stopped = stop_service(data_dir)
        console.print(f"Service on {stopped.url} stopped." if stopped else "No service running.")
        return
    running = running_service(data_dir)
    if running is not None:
        console.print(f"The service already runs on {running.url} (pid {running.pid}).")
        return
    ops = port + 1 if ops_port is None else ops_port
    if ops == port:
        raise BadInputError(
            f"--ops-port {ops} is the public port; pick another or 0 for no operations listener."
        )
    settings, filled = resolve_settings(data_dir)
    if workers is None:
        from service.http_server import default_workers

        workers = default_workers()
    require_free_ports([port, ops] if ops else [port], host)
    urls = f"API: http://{host}:{port}/api/v1/images   docs: http://{host}:{port}/docs"
    if ops:
        urls += f"   operations: http://{ops_host}:{ops}/cluster /metrics"
    if detach:
        record = start_service(
            data_dir, host=host, port=port, ops_port=ops, workers=workers, env=filled
        )
        console.print(f"Service running (pid {record.pid}). {urls}")
        return
    from service.http_server import Listener, run_server

    # Worker processes read their settings from the environment.
    os.environ.update(filled)
    if ops:
        os.environ["REPLIKIT_OPS_PORT"] = str(ops)
    console.print(urls)
    run_server(
        settings,
        public=Listener(host, port),
        ops=Listener(ops_host, ops) if ops else None,
        workers=workers,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@app.command("bench")
def bench(
    rounds: Annotated[int, typer.Option(help="Rounds (configurations alternate).", min=1)] = 3,
    seconds: Annotated[float, typer.Option(help="Seconds per workload and round.")] = 3.0,
    quick: Annotated[bool, typer.Option(help="One round of 1 s; kills for two.")] = False,
    results: ResultsOption = Path("results"),
) -> None:
    """Issue 13's side-by-side bench on a scratch cluster of its own (docs/benchmarks.md)."""
    from loadtests.benchmarks.side_by_side import parse_options, run_bench

    argv = ["--rounds", str(rounds), "--seconds", str(seconds), "--results-dir", str(results)]
    out = run_bench(parse_options([*argv, "--quick"] if quick else argv))
    console.print((out / "bench.md").read_text())


def main() -> None:
    try:
        app()
    except ReplikitError as error:
        error_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
