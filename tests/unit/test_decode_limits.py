"""The decode workers' own limits, checked in throwaway processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_budget_kills_a_runaway_decode_without_the_parent() -> None:
    """The backstop for a parent too starved to enforce the wall clock: SIGXCPU after 1 s."""
    busy = (
        "from service.images.decoder import set_cpu_budget\n"
        "sum(range(3_000_000))  # some CPU already used: the budget is on top of it\n"
        "set_cpu_budget(1)\n"
        "while True:\n"
        "    pass\n"
    )
    result = subprocess.run([sys.executable, "-c", busy], cwd=ROOT, timeout=60, check=False)
    assert result.returncode == -signal.SIGXCPU


def test_cpu_budget_is_moved_forward_for_each_decode() -> None:
    """A worker that has used more CPU than one budget over its life is not killed for it."""
    steady = (
        "import resource, time\n"
        "from service.images.decoder import set_cpu_budget\n"
        "for _ in range(3):\n"
        "    set_cpu_budget(1)\n"
        "    end = time.process_time() + 0.6\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU)[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", steady], cwd=ROOT, timeout=60, check=False, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 2
