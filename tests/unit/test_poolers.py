"""Reading PgBouncer's SHOW POOLS for ``cluster status``."""

from __future__ import annotations

import pytest

from replication.poolers import PoolerStats, parse_show_pools
from replication.probe import NodeStatus

# psql -A -F '|' -P footer=off, PgBouncer 1.24 (the pgbouncer admin pool and the app's pool).
SHOW_POOLS = """\
database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode|load_balance_hosts
pgbouncer|pgbouncer|1|0|0|0|0|0|0|0|0|0|0|0|0|statement|
replikit|app|37|4|0|0|30|0|0|2|5|0|0|1|250|transaction|
"""


def test_show_pools_is_summed_over_every_pool_by_column_name() -> None:
    assert parse_show_pools(SHOW_POOLS) == PoolerStats(
        clients_active=38, clients_waiting=4, servers_active=30, servers_idle=7
    )


def test_an_older_pgbouncer_without_some_columns_is_read_too() -> None:
    old = (
        "database|user|cl_active|cl_waiting|sv_active|sv_idle|pool_mode\n"
        "replikit|app|3|0|2|1|transaction\n"
    )
    assert parse_show_pools(old) == PoolerStats(3, 0, 2, 1)


def test_something_else_than_show_pools_is_refused() -> None:
    with pytest.raises(ValueError, match="SHOW POOLS"):
        parse_show_pools("name|value\nx|1\n")


def test_a_status_row_shows_its_poolers_state_only_when_there_is_one() -> None:
    bare = NodeStatus(name="pg0", port=6432, role="primary")
    bare.add_pooler(None)
    assert bare.pooler_servers is None
    row = NodeStatus(name="pg0", port=6432, role="primary")
    row.add_pooler(PoolerStats(5, 1, 3, 2))
    assert (row.pooler_clients, row.pooler_waiting, row.pooler_servers) == (5, 1, 5)
