"""A connection pooler's state as ``cluster status`` shows it: PgBouncer's ``SHOW POOLS``.

Where poolers run is the driver's business (the compose driver asks the pooler container in
front of each node); what their answer means is read here, the same for every driver.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

# What the drivers run on the pooler's admin console, as its stats user: a header line, then a
# row per pool, "|"-separated, no footer.
SHOW_POOLS_PSQL = (
    "psql -h 127.0.0.1 -p 6432 -U pooler_auth -d pgbouncer -X -A -F '|' -P footer=off "
    "-c 'SHOW POOLS'"
)


@dataclass(frozen=True)
class PoolerStats:
    """Summed over the pooler's pools: clients running a transaction and clients waiting for
    a server connection; server connections linked to a client and idle in the pool."""

    clients_active: int
    clients_waiting: int
    servers_active: int
    servers_idle: int


def parse_show_pools(output: str) -> PoolerStats:
    """``SHOW POOLS`` as printed by ``psql -A -F '|'`` (columns found by name: their order and
    number change between PgBouncer versions)."""
    rows = list(csv.DictReader(io.StringIO(output.strip()), delimiter="|"))
    if rows and not {"cl_active", "cl_waiting", "sv_active", "sv_idle"} <= set(rows[0]):
        raise ValueError(f"not the output of SHOW POOLS: {output[:200]!r}")

    def total(*columns: str) -> int:
        return sum(int(row[c] or 0) for row in rows for c in columns if c in row)

    return PoolerStats(
        clients_active=total("cl_active"),
        clients_waiting=total("cl_waiting"),
        servers_active=total("sv_active"),
        servers_idle=total("sv_idle", "sv_used"),
    )
