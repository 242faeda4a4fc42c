"""A node's data directory on a small filesystem of its own, which a test fills and frees.

As root only: the node is stopped, its data directory moved onto a size-limited tmpfs mounted
in its place (owned by the server account, 0700 as PostgreSQL wants), and started again (by
the cluster's own commands, so under Patroni too), so
everything the node writes (tables, WAL, temporary files) lands on that filesystem. The test
fills it with a file of its own (written as root, which a tmpfs does not exempt from its size)
and frees it by deleting that file. Afterwards the node is stopped before the filesystem is
unmounted, so no server outlives the test on a filesystem nobody can reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from replication.cluster import Cluster, cluster_up
from replication.drivers.base import StopMode
from replication.server_user import ServerUser

FILLER = "replikit-test-filler"
CHUNK = b"\0" * (1 << 20)


@dataclass(frozen=True)
class SmallDisk:
    """A mounted tmpfs: under a node's data directory, or anywhere a test wants one."""

    path: Path

    def fill(self) -> int:
        """Take every free byte (in 1 MB writes, then page by page); return how many."""
        written = 0
        with (self.path / FILLER).open("ab", buffering=0) as handle:
            for chunk in (CHUNK, CHUNK[:4096]):
                with contextlib.suppress(OSError):  # ENOSPC
                    while True:
                        written += handle.write(chunk) or 0
        return written

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def available(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


@contextlib.contextmanager
def tmpfs(
    path: Path, *, size_mb: int, uid: int = 0, gid: int = 0, mode: str = "0755"
) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mb`` MB mounted on the (empty) directory ``path`` for the duration;
    whatever uses it must be stopped before it ends."""
    options = f"size={size_mb}m,mode={mode},uid={uid},gid={gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=False)


@contextlib.contextmanager
def small_disk(cluster: Cluster, name: str, *, size_mb: int = 128) -> Iterator[SmallDisk]:
    """Node ``name``'s data directory on a tmpfs of ``size_mb`` MB for the duration: the node
    is stopped (with its agent under Patroni), moved, and started by ``cluster up``."""
    node = cluster.state.node(name)
    pgdata = cluster.data_dir / name
    assert (pgdata / "PG_VERSION").is_file(), f"{pgdata} is not {name}'s data directory"
    cluster.manager.stop_node(node, StopMode.FAST)
    aside = pgdata.with_name(f"{name}.before-small-disk")
    pgdata.rename(aside)
    pgdata.mkdir()
    user = ServerUser.detect()
    with tmpfs(pgdata, size_mb=size_mb, uid=user.uid, gid=user.gid, mode="0700"):
        try:
            subprocess.run(["cp", "-a", f"{aside}/.", str(pgdata)], check=True)
            shutil.rmtree(aside)
            cluster_up(cluster.data_dir)
            yield SmallDisk(pgdata)
        finally:
            cluster.manager.stop_node(node, StopMode.IMMEDIATE)
