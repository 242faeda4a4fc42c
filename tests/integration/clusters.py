"""Build and always tear down real clusters for tests, through the same code as the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from replication.cluster import Cluster, cluster_down, cluster_up
from replication.ports import ephemeral_port_floor, find_free_port_range
from replication.topology import DEFAULT_MAX_SLOT_WAL_KEEP_SIZE, Manager, SyncMode

T = TypeVar("T")
REPLIKIT = str(Path(sys.executable).parent / "replikit")


# Every scratch directory the tests made; tests/conftest.py removes them when the run ends.
CREATED_TEMP_DIRS: list[Path] = []


def reachable_temp_dir(prefix: str) -> Path:
    """A temp dir the postgres account can enter (mkdtemp makes 0700 dirs as root), removed
    at the end of the test run unless REPLIKIT_KEEP_TEST_CLUSTERS is set."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    CREATED_TEMP_DIRS.append(path)
    return path


@dataclass(frozen=True)
class WalSizes:
    """The WAL retention settings of a new cluster (``cluster up``'s defaults unless set)."""

    wal_keep_size: str = "256MB"
    max_slot_wal_keep_size: str = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE


def remove_temp_dirs() -> None:
    if os.environ.get("REPLIKIT_KEEP_TEST_CLUSTERS"):
        return
    while CREATED_TEMP_DIRS:
        shutil.rmtree(CREATED_TEMP_DIRS.pop(), ignore_errors=True)


def free_base_port(nodes: int) -> int:
    """A random start keeps parallel runs on one machine from racing for the same ports;
    staying below the ephemeral range keeps outgoing connections from taking a node's port
    between the check and its server's bind. REPLIKIT_TEST_PORTS=LOW-HIGH keeps a run within
    its own range (several people testing on one machine)."""
    floor = ephemeral_port_floor()
    low, _, high = os.environ.get("REPLIKIT_TEST_PORTS", "").partition("-")
    if low.isdigit() and high.isdigit():
        start = random.randrange(int(low), max(int(low) + 1, int(high) - nodes * 10), nodes)
        return find_free_port_range(nodes, start=start, stop=int(high))
    start = random.randrange(20000, max(20100, floor - 1000), 100)
    return find_free_port_range(nodes, start=start, stop=max(floor, start + 1000))


@contextlib.contextmanager
def running_cluster(
    *,
    replicas: int = 2,
    sync: SyncMode = SyncMode.OFF,
    name: str = "cluster",
    manager: Manager = Manager.NATIVE,
    wal_sizes: WalSizes | None = None,
    prefix: str = "replikit-",
    archive: bool = False,
    tls: bool | None = None,
) -> Iterator[Cluster]:
    """A fresh cluster that is stopped and deleted afterwards, also when the test fails
    (with ``archive``, it archives WAL into its own repository: ``cluster up --archive``;
    ``tls`` as ``--tls on|off``, None: the manager's default)."""
    root = reachable_temp_dir(f"{prefix}{name}-")
    data_dir = root / "cluster"
    try:
        cluster, _ = cluster_up(
            data_dir,
            replicas=replicas,
            sync=sync,
            base_port=free_base_port(replicas + 1),
            manager=manager,
            **asdict(wal_sizes or WalSizes()),
            archive=archive,
            tls=tls,
        )
        yield cluster
    finally:
        try:
            cluster_down(data_dir, purge=False)
        finally:
            force_stop(data_dir)
            if not os.environ.get("REPLIKIT_KEEP_TEST_CLUSTERS"):
                shutil.rmtree(root, ignore_errors=True)


def force_stop(data_dir: Path) -> None:
    """Last line of defence: stop any node (and any Patroni agent or etcd member) still
    running under ``data_dir``."""
    with contextlib.suppress(Exception):
        Cluster.open(data_dir).manager.discard()


def replikit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console script, as a user would."""
    return subprocess.run(
        [REPLIKIT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=180,
        check=False,
    )


@contextlib.asynccontextmanager
async def in_thread(context: contextlib.AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit a blocking context manager in a worker thread: the cluster API drives
    its own event loop, and stopping or starting a node blocks."""
    value = await asyncio.to_thread(context.__enter__)
    try:
        yield value
    except BaseException as error:
        if not await asyncio.to_thread(context.__exit__, type(error), error, error.__traceback__):
            raise
    else:
        await asyncio.to_thread(context.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def running_cluster_async(
    *,
    replicas: int = 2,
    sync: SyncMode = SyncMode.OFF,
    name: str = "cluster",
    manager: Manager = Manager.NATIVE,
    wal_sizes: WalSizes | None = None,
    prefix: str = "replikit-",
) -> AsyncIterator[Cluster]:
    """:func:`running_cluster` for async tests, built and stopped in a worker thread, because
    the cluster API drives its own event loop."""
    context = running_cluster(
        replicas=replicas, sync=sync, name=name, manager=manager, wal_sizes=wal_sizes, prefix=prefix
    )
    async with in_thread(context) as cluster:
        yield cluster
