"""The Prometheus alert rules (deploy/prometheus/alerts.yml) as Prometheus itself reads them:
``promtool check rules`` parses every expression, and ``promtool test rules`` runs the unit
tests in deploy/prometheus/alerts_test.yml (series in, alerts out: a certificate 10 days from
expiry warns after 10 minutes, one 30 days away does not, an expired one is critical at once,
two instances seeing one node raise one alert). make setup puts promtool in .tools/bin."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"


def _promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / ".tools/bin"))
    assert found, "promtool is missing: run 'make setup' (it extracts it into .tools/bin)"
    return found


def _run(*args: str) -> str:
    result = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_alert_rule_parses() -> None:
    assert "SUCCESS" in _run("check", "rules", str(RULES))


def test_the_certificate_alerts_fire_on_the_series_they_are_for() -> None:
    assert "SUCCESS" in _run("test", "rules", str(ROOT / "deploy/prometheus/alerts_test.yml"))
