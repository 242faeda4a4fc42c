"""What every command group prints, and the options they share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from replication.probe import NodeStatus

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
    if any(row.pooler_servers is not None for row in rows):
        columns += ["pooler_clients", "pooler_waiting", "pooler_servers"]
    for column in columns:
        table.add_column(column, justify="right" if column.startswith(("lag", "port")) else "left")
    for row in rows:
        values = row.to_json()
        table.add_row(*(_fmt(values[column]) for column in columns))
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
