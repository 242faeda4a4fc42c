"""The real ``replikit`` command, run as a user runs it: the benchmarks time the CLI itself
(Python's start-up included), so they call the installed script, not its functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPLIKIT = str(Path(sys.executable).parent / "replikit")


def replikit(*args: str) -> str:
    """Run ``replikit args``; its standard output, or SystemExit with its error."""
    result = subprocess.run([REPLIKIT, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"replikit {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def replikit_json(*args: str) -> dict[str, Any]:
    """``replikit args --json``, parsed."""
    return dict(json.loads(replikit(*args, "--json")))


def replikit_quietly(*args: str) -> None:
    """Run ``replikit args`` for clean-up, whatever it answers (the thing may be gone)."""
    subprocess.run([REPLIKIT, *args], capture_output=True, check=False)
