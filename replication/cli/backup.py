"""``replikit backup ...`` and ``replikit restore``: backups of a cluster that archives WAL
(``cluster up --archive``), and point-in-time recovery into a new cluster
(:mod:`replication.backup`)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from replication.backup.base import BackupSource, BackupType, RestoreTarget, TargetKind
from replication.backup.restore import restore_cluster
from replication.cli.output import DataDirOption, JsonOption, console, report
from replication.cluster import DEFAULT_DATA_DIR, Cluster
from replication.errors import BadInputError
from service.routing.lsn import parse_lsn

backup_app = typer.Typer(
    help="Take a backup (from a streaming replica when there is one), or list or verify them; "
    "for a cluster "
    "built with 'replikit cluster up --archive'.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


@backup_app.callback()
def backup(
    context: typer.Context,
    kind: Annotated[
        BackupType,
        typer.Option(
            "--type",
            help="full, diff (changes since the last full) or incr (since the last backup).",
        ),
    ] = BackupType.FULL,
    source: Annotated[
        BackupSource | None,
        typer.Option(
            "--from",
            help="The node to copy the files from: replica (a streaming one; the primary "
            "only starts and stops the backup) or primary. Default: a streaming replica when "
            "there is one, else the primary.",
        ),
    ] = None,
    low_priority: Annotated[
        bool,
        typer.Option(
            "--low-priority",
            help="Run pgBackRest under 'nice -n 19 ionice -c 3': slower, leaves the CPU to "
            "the servers.",
        ),
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Take a backup, from a streaming replica when there is one (else from the primary)."""
    if context.invoked_subcommand is not None:
        return
    tool = Cluster.open(data_dir).manager.backups()
    taken, node = tool.backup(kind, source=source, low_priority=low_priority)
    seconds = (taken.stopped_at - taken.started_at).total_seconds()
    report(
        {**taken.to_json(), "source": node, "seconds": seconds},
        as_json,
        f"Backup {taken.label} ({taken.type.value}) copied from {taken.copied_from or node} "
        f"in {seconds:.0f} s: "
        f"{_size(taken.size_bytes)} of data, {_size(taken.repository_bytes)} in the repository.",
    )


@backup_app.command("list")
def list_backups(data_dir: DataDirOption = DEFAULT_DATA_DIR, as_json: JsonOption = False) -> None:
    """Each backup, and the window a restore can reach (earliest and latest point)."""
    catalog = Cluster.open(data_dir).manager.backups().catalog()
    if as_json:
        print(json.dumps(catalog.to_json(), indent=2, default=str))
        return
    table = Table(title="replikit backups")
    columns = ("label", "type", "from", "started", "stopped", "stop_lsn", "data", "in repository")
    for column in columns:
        table.add_column(column)
    for item in catalog.backups:
        table.add_row(
            item.label,
            item.type.value,
            item.copied_from or "?",
            item.started_at.isoformat(),
            item.stopped_at.isoformat(),
            item.to_json()["stop_lsn"],
            _size(item.size_bytes),
            _size(item.repository_bytes),
        )
    console.print(table)
    if catalog.window is None:
        console.print("No backup yet, so nothing to restore: take one with 'replikit backup'.")
    else:
        console.print(f"Recoverable window: {catalog.window.describe()}.")


@backup_app.command("verify")
def verify(data_dir: DataDirOption = DEFAULT_DATA_DIR, as_json: JsonOption = False) -> None:
    """Check that the archive takes WAL now and has no gap from the oldest backup on."""
    found = Cluster.open(data_dir).manager.backups().verify()
    if found.oldest_backup is None:
        summary = (
            "The archive takes WAL, but there is no backup yet: take one with 'replikit backup'."
        )
    elif found.missing:
        summary = (
            f"The archive has a gap: {len(found.missing)} WAL segments are missing after backup "
            f"{found.oldest_backup} (first {found.missing[0]}); take a new full backup with "
            "'replikit backup'."
        )
    else:
        summary = (
            f"The archive is complete from backup {found.oldest_backup} ({found.first_wal}) to "
            f"{found.last_wal}, and takes WAL now."
        )
    report(found.to_json(), as_json, summary)
    if not found.ok:
        raise typer.Exit(1)


def _target(to: datetime | None, lsn: str | None, latest: bool) -> RestoreTarget:
    chosen = [name for name, given in (("--to", to), ("--lsn", lsn), ("--latest", latest)) if given]
    if len(chosen) != 1:
        raise BadInputError("Give exactly one of --to TIME, --lsn LSN or --latest.")
    if to is not None:
        if to.tzinfo is None:
            to = to.astimezone()  # the local time zone, as the user's clock shows it
        return RestoreTarget(TargetKind.TIME, time=to)
    if lsn is not None:
        try:
            return RestoreTarget(TargetKind.LSN, lsn=parse_lsn(lsn))
        except ValueError:
            raise BadInputError(
                f"--lsn takes a WAL position like 0/3000060, not {lsn!r}."
            ) from None
    return RestoreTarget(TargetKind.LATEST)


def restore(
    new_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Where the NEW cluster goes (a missing or empty directory)."
        ),
    ],
    to: Annotated[
        datetime | None,
        typer.Option(
            "--to",
            formats=[
                "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%dT%H:%M:%S.%f%z",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M:%S%z",
                "%Y-%m-%d %H:%M:%S",
            ],
            help="Recover the transactions committed at or before this time "
            "(e.g. 2026-12-05T06:30:00+00:00; without an offset, the local time zone).",
        ),
    ] = None,
    lsn: Annotated[
        str | None, typer.Option("--lsn", help="Recover up to this WAL position.")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Recover everything the archive holds.")
    ] = False,
    source: Annotated[
        Path,
        typer.Option(
            "--from", envvar="REPLIKIT_DATA_DIR", help="The cluster whose backups to restore."
        ),
    ] = DEFAULT_DATA_DIR,
    base_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the new cluster's pg0 (default: the first free after the source's; "
            "for a compose stack, the first of its published ports)."
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            help="A compose source only: the new stack's project name (default: the "
            "source's plus -restored).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a NEW cluster from a backup, recovered to a time, an LSN or the latest WAL.

    Primary and replicas, with the source's names and passwords and ports of their own; the
    source cluster is not touched. A compose stack is restored into a new compose stack.
    """
    target = _target(to, lsn, latest)
    result = restore_cluster(
        source=source, new_dir=new_dir, target=target, base_port=base_port, project=project
    )
    report(
        result.to_json(),
        as_json,
        f"Restored backup {result.backup} to {target.describe()} into {result.data_dir} in "
        f"{result.seconds:.1f} s: primary pg0 on port {result.primary_port}, "
        f"{result.replicas} replica{'' if result.replicas == 1 else 's'}. {result.next_steps}",
    )
