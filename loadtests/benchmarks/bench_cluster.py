"""The 1+2 cluster a benchmark reads and writes: built (or restarted) by the same code as
``replikit cluster up``, and migrated by today's migrations, as ``replikit migrate`` does."""

from __future__ import annotations

import random
from pathlib import Path

from replication.cluster import Cluster, cluster_up
from replication.ports import ephemeral_port_floor, find_free_port_range
from service import migrate


def free_ports_below_ephemeral(count: int, start: int | None = None) -> int:
    """The first of ``count`` free consecutive ports, below the kernel's ephemeral range: a
    client connection can take a port above it between the check and the server's bind (a
    bench cluster lost its primary's port that way). From ``start``, else from a random
    point, so benchmarks and tests running at once do not race for the same ports."""
    floor = ephemeral_port_floor()
    if start is None:
        start = random.randrange(20000, max(20100, floor - 1000), 100)
    return find_free_port_range(count, start=start, stop=max(floor, start + count + 1))


def scratch_cluster(data_dir: Path) -> Cluster:
    """A new 1+2 cluster in ``data_dir`` on free ports."""
    cluster, _ = cluster_up(data_dir, replicas=2, base_port=free_ports_below_ephemeral(3))
    return cluster


def migrated_cluster(data_dir: Path, *, new: bool = True) -> Cluster:
    """:func:`scratch_cluster` (or, ``new=False``, the cluster ``replikit cluster up`` makes
    or restarts in ``data_dir`` with its defaults), with the schema at today's head."""
    cluster = scratch_cluster(data_dir) if new else cluster_up(data_dir)[0]
    migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
    return cluster
