"""``replikit serve``, ``migrate`` and ``bench``: the image service over a cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from replication.cli.output import DataDirOption, ResultsOption, console
from replication.cluster import DEFAULT_DATA_DIR
from replication.errors import BadInputError, ClusterTimeoutError
from replication.ports import require_free_ports


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
    from replication.serving.env import resolve_migration_urls
    from service import migrate as migrations

    urls, user, ca = resolve_migration_urls(data_dir)
    try:
        primary_url = migrations.find_primary_url(
            urls, wait_seconds=wait_for_primary, ssl_root_cert=ca
        )
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
        migrations.downgrade(primary_url, revision, ssl_root_cert=ca)
    else:
        migrations.upgrade(primary_url, revision, ssl_root_cert=ca)
    console.print(f"Database {'downgraded' if down else 'upgraded'} to {revision} (as {user}).")


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
    from replication.serving.env import resolve_settings
    from replication.serving.process import running_service, start_service, stop_service

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
