"""The ``replikit`` command line: the command groups, and errors from any command printed
here, in one place."""

from __future__ import annotations

import sys

import typer

from replication.cli.backup import backup_app, restore
from replication.cli.certs import certs_app
from replication.cli.cluster import cluster_app
from replication.cli.compose import compose_app
from replication.cli.experiment import experiment_app
from replication.cli.output import error_console
from replication.cli.service import bench, migrate, serve
from replication.errors import ReplikitError

app = typer.Typer(
    help="Run and experiment with a replicated PostgreSQL service.", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")
app.add_typer(backup_app, name="backup")
app.add_typer(certs_app, name="certs")
app.command("restore")(restore)
app.add_typer(experiment_app, name="experiment")
app.add_typer(compose_app, name="compose")
app.command("migrate")(migrate)
app.command("serve")(serve)
app.command("bench")(bench)


def main() -> None:
    try:
        app()
    except ReplikitError as error:
        error_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
