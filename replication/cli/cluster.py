"""``replikit cluster ...``: build, observe and break a cluster; every command asks the
cluster's manager (:mod:`replication.cluster`)."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from replication import cluster as clusters
from replication.cli.output import DataDirOption, JsonOption, console, print_status, report
from replication.cluster import DEFAULT_DATA_DIR, Cluster, cluster_down, cluster_up
from replication.drivers.base import StopMode
from replication.errors import BadInputError
from replication.lag import LagChange
from replication.topology import DEFAULT_MAX_SLOT_WAL_KEEP_SIZE, Manager, SyncMode


class TlsMode(StrEnum):
    ON = "on"
    OFF = "off"


cluster_app = typer.Typer(
    help="A primary-replica cluster: local PostgreSQL processes, or an attached compose stack.",
    no_args_is_help=True,
)


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
    max_slot_wal_keep_size: Annotated[
        str,
        typer.Option(
            help="The most WAL one replica's slot may hold back on the primary before "
            "PostgreSQL gives up on that replica (it is re-cloned on rejoin); -1 for no limit."
        ),
    ] = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
    manager: Annotated[
        Manager | None,
        typer.Option(
            help="Who moves the primary role: native (replikit's commands, the default) or "
            "patroni (Patroni agents over a 3-member etcd fail over by themselves)."
        ),
    ] = None,
    archive: Annotated[
        bool,
        typer.Option(
            "--archive",
            help="Archive WAL continuously with pgBackRest into <data-dir>/backup, for "
            "'replikit backup' and 'replikit restore' (native manager; needs pgbackrest).",
        ),
    ] = False,
    tls: Annotated[
        TlsMode | None,
        typer.Option(
            help="TLS on every connection to the nodes (on: the default of native clusters; "
            "off: plain TCP, for comparison). See docs/security.md."
        ),
    ] = None,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            help="Bring your own certificates from this directory (ca.crt, server-<node>.crt/"
            ".key, client-replicator.crt/.key) instead of the kit's own CA."
        ),
    ] = None,
) -> None:
    """Create (or restart) the primary and its replicas and wait until every one streams."""
    _require_size("--wal-keep-size", wal_keep_size)
    _require_size("--max-slot-wal-keep-size", max_slot_wal_keep_size, unlimited="-1")
    _, rows = cluster_up(
        data_dir,
        replicas=replicas,
        sync=sync,
        base_port=base_port,
        pg_bin=pg_bin,
        wal_keep_size=wal_keep_size,
        max_slot_wal_keep_size=max_slot_wal_keep_size,
        manager=manager,
        archive=archive,
        tls=None if tls is None else tls is TlsMode.ON,
        tls_dir=tls_dir,
    )
    print_status(rows)
    for row in rows:
        if row.fenced and row.role == "down":
            console.print(
                f"{row.name} is fenced (a former primary) and was not started; bring it back "
                f"with 'replikit cluster rejoin {row.name}'."
            )


def _require_size(option: str, value: str, *, unlimited: str | None = None) -> None:
    """A PostgreSQL size setting written as a number and a unit (or the unlimited value)."""
    if value == unlimited or re.fullmatch(r"\d+(kB|MB|GB|TB)", value):
        return
    also = f", or {unlimited} for no limit" if unlimited else ""
    raise BadInputError(f"{option} takes a size like 256MB or 4GB{also}, not {value!r}.")


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
        for row in rows:
            if row.slot_lost:
                console.print(
                    f"{row.name}'s slot {row.slot} was invalidated (wal_status lost): the "
                    f"primary no longer has the WAL it needs; re-clone it with 'replikit "
                    f"cluster rejoin {row.name}'."
                )


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
    print("\n".join(clusters.env_lines(data_dir)))


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
    from replication.compose.attach import attach_compose as attach

    state = attach(data_dir, compose_file, env_file, project_name)
    service = f"; service {state.service.url}" if state.service else ""
    console.print(
        f"Compose cluster recorded in {data_dir} (primary {state.primary}{service}); use "
        f"'replikit cluster status --data-dir {data_dir}' and the other cluster commands."
    )


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
    result = clusters.kill(data_dir, node, mode, postgres_only=postgres_only)
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
    result = clusters.failover(data_dir, to=to, force=force)
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
    result = clusters.switchover(data_dir, to=to)
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
    result = clusters.rejoin(data_dir, node)
    how = {
        "rewound": "rewound with pg_rewind",
        "recloned": "re-cloned with a base backup",
        "unchanged": "no rewind was needed",
    }.get(str(result["method"]), str(result["method"]))
    because = f", because {result['reclone_reason']}" if result.get("reclone_reason") else ""
    report(result, as_json, f"{node} streams from {result['primary']} ({how}{because}).")


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
    result = clusters.lag(data_dir, node, LagChange(apply_delay, pause, resume, clear))
    report(
        result,
        as_json,
        f"{node}: apply delay {result['apply_delay'] or 'none'}, replay "
        f"{'paused' if result['replay_paused'] else 'running'}.",
    )
