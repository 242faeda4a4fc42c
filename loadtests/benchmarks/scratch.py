"""A benchmark's scratch directory: its clusters, service records, logs and stack files."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_dir(prefix: str = "replikit-bench-", parent: str | None = None) -> Iterator[Path]:
    """A new directory, mode 0755 (the postgres account must reach the clusters inside it),
    removed with everything in it when the block ends, also on failure. In /var/tmp unless
    ``parent`` says otherwise: /tmp may be a small tmpfs, and a cluster's WAL is not."""
    if parent is None:
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    else:
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    scratch.chmod(0o755)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
