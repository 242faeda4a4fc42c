"""The node scripts are shared with containers; keep them shellcheck clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_shell_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing; `make setup` installs it"
    scripts = sorted(
        [*ROOT.glob("replication/scripts/*.sh"), *ROOT.glob("deploy/**/*.sh"), ROOT / ".ci/run"]
    )
    assert len(scripts) >= 4
    result = subprocess.run(
        [shellcheck, "-x", *map(str, scripts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
