"""What every command group prints, and the options they share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from replication.probe import NodeStatus

# Wide enough for the status table (with the Patroni columns) when output goes to a pipe or a
# file.
console = Console(width=None if Console().is_terminal else 200)
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


SIZE_UNITS = ("B", "kB", "MB", "GB", "TB")


def format_size(size: int | None) -> str:
    """Bytes as PostgreSQL prints sizes (1024-based, one decimal from kB up): ``512 B``,
    ``16.0 MB``, ``-2.5 GB``; ``-`` for none."""
    if size is None:
        return "-"
    value = float(abs(size))
    unit = 0
    while value >= 1024 and unit < len(SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    sign = "-" if size < 0 else ""
    if unit == 0:
        return f"{sign}{int(value)} B"
    return f"{sign}{value:.1f} {SIZE_UNITS[unit]}"


# Table columns shown under another name than their JSON key, with their own formatting.
SLOT_COLUMNS: dict[str, Callable[[NodeStatus], str]] = {
    "wal_status": lambda row: _fmt(row.slot_wal_status),
    "safe_wal_size": lambda row: format_size(row.slot_safe_wal_size),
}
CERT_COLUMNS: dict[str, Callable[[NodeStatus], str]] = {
    "cert_expires": lambda row: (
        f"{row.cert_expires[:10]} ({row.cert_days_left} d)" if row.cert_expires else "-"
    ),
}


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
        *SLOT_COLUMNS,
        "apply_delay",
        "replay_paused",
        "fenced",
    ]
    if any(row.patroni_role is not None for row in rows):
        columns += ["patroni_role", "patroni_state"]
    if any(row.pooler_servers is not None for row in rows):
        columns += ["pooler_clients", "pooler_waiting", "pooler_servers"]
    if any(row.cert_expires is not None for row in rows):
        columns += [*CERT_COLUMNS]
    formatted = {**SLOT_COLUMNS, **CERT_COLUMNS}
    for column in columns:
        right = column.startswith(("lag", "port", "safe"))
        table.add_column(column, justify="right" if right else "left")
    for row in rows:
        values = row.to_json()
        table.add_row(
            *(
                formatted[column](row) if column in formatted else _fmt(values[column])
                for column in columns
            )
        )
    console.print(table)


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def report(result: dict[str, object], as_json: bool, summary: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(summary)


def show_results(out: Path) -> None:
    """An experiment's summary.md, then where everything else is."""
    console.print((out / "summary.md").read_text())
    console.print(f"Results and plots: {out}")


ResultsOption = Annotated[
    Path, typer.Option("--results", help="Where results/<name>-<timestamp>/ goes.")
]


def comma_separated(text: str) -> list[str]:
    """The non-empty items of a comma-separated option."""
    return [item for item in text.split(",") if item.strip()]
