"""The backup tools of local clusters by the name their state file records (``archive.tool``);
a compose stack's tool is set by the composition root (:mod:`replication.cluster`)."""

from __future__ import annotations

from replication.backup.base import BackupTool
from replication.backup.pgbackrest import PgBackRest
from replication.drivers.local.driver import LocalDriver

TOOLS: dict[str, type[PgBackRest]] = {PgBackRest.name: PgBackRest}
DEFAULT_TOOL = PgBackRest.name


def backup_tool(driver: LocalDriver) -> BackupTool | None:
    """The tool that archives this cluster's WAL, or None for a cluster that archives none."""
    archive = driver.state.archive
    return None if archive is None else TOOLS[archive.tool](driver)
