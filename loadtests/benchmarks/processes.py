"""What the bench's processes use, read from /proc: a server and everything it started (the
service's decode workers, pgpool's children), a cluster's PostgreSQL processes, their CPU time
and their memory."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return parents


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every live process below them."""
    parents = _parents()
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def processes_naming(marker: Path) -> set[int]:
    """The processes whose command line names ``marker`` (a cluster's postmasters name their
    data directory)."""
    needle = str(marker).encode()
    found = set()
    for cmdline in PROC.glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if needle in cmdline.read_bytes():
                found.add(int(cmdline.parent.name))
    return found


def cpu_seconds(pids: set[int]) -> dict[int, float]:
    """utime + stime of each live process in ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


@dataclass
class ProcessMemory:
    """RSS counts shared pages (pgpool's 38 children share most of theirs) in every process;
    PSS splits them among the sharers, so PSS totals add up and RSS totals overstate."""

    pid: int
    program: str
    rss_mib: float
    pss_mib: float


def _kib(text: str, field: str) -> int:
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(field)), 0)


def _memory(pid: int) -> ProcessMemory | None:
    proc = PROC / str(pid)
    try:
        status = (proc / "status").read_text()
        command = (proc / "cmdline").read_bytes().split(b"\0")
        rollup = (proc / "smaps_rollup").read_text()
    except OSError:
        return None
    program = " ".join(part.decode(errors="replace") for part in command[:3] if part)
    return ProcessMemory(
        pid=pid,
        program=program[:80],
        rss_mib=round(_kib(status, "VmRSS:") / 1024, 1),
        pss_mib=round(_kib(rollup, "Pss:") / 1024, 1),
    )


def process_tree_memory(pid: int) -> list[ProcessMemory]:
    """Memory of ``pid`` (first) and its descendants (PSS from smaps_rollup)."""
    pids = [pid, *sorted(descendants({pid}) - {pid})]
    return [memory for p in pids if (memory := _memory(p)) is not None]
