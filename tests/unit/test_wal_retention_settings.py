"""Bounded WAL retention: one default everywhere a node is built, sizes printed as PostgreSQL
prints them, and alert rules over metrics the exporter's queries produce."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from replication.cli.output import format_size
from replication.managers.patroni import config as patroni_config
from replication.topology import DEFAULT_MAX_SLOT_WAL_KEEP_SIZE, SyncMode, build_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 kB"),
        (50_330_824, "48.0 MB"),
        (4 * 1024**3, "4.0 GB"),
        (-16 * 1024**2, "-16.0 MB"),
        (3 * 1024**5, "3072.0 TB"),
    ],
)
def test_sizes_print_as_postgresql_prints_them(size: int | None, text: str) -> None:
    assert format_size(size) == text


def test_every_way_of_building_a_node_has_the_same_default_limit() -> None:
    default = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE
    assert re.fullmatch(r"\d+GB", default)
    state = build_state(
        replicas=1, sync=SyncMode.OFF, base_port=7000, pg_bin=Path("/bin"), pg_major=15
    )
    assert state.max_slot_wal_keep_size == default
    assert default == patroni_config.DEFAULT_MAX_SLOT_WAL_KEEP_SIZE
    script = (ROOT / "replication/scripts/init-primary.sh").read_text()
    assert f"REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE:-{default}}}" in script
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE: ${{REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE:-{default}}}" in (
        compose
    )
    assert f"REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE={default}" in (ROOT / ".env.example").read_text()


def _exported_metrics() -> set[str]:
    queries = yaml.safe_load((ROOT / "deploy/postgres-exporter/queries.yaml").read_text())
    names = set()
    for namespace, query in queries.items():
        for column in query["metrics"]:
            ((name, spec),) = column.items()
            if spec["usage"] != "LABEL":
                names.add(f"{namespace}_{name}")
    return names


def test_alert_rules_use_only_metrics_the_exporter_queries_produce() -> None:
    exported = _exported_metrics()
    assert {"pg_slot_retention_retained_bytes", "pg_slot_retention_lost"} <= exported
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    (slot_group,) = [g for g in rules["groups"] if g["name"] == "replikit-wal-retention"]
    alerts = slot_group["rules"]
    assert {rule["alert"] for rule in alerts} >= {"ReplicationSlotLost"}
    for rule in alerts:
        used = set(re.findall(r"\bpg_[a-z_]+", rule["expr"]))
        assert used, rule
        assert used <= exported, f"{rule['alert']} uses {used - exported}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"], rule


def test_prometheus_loads_the_rules_its_image_copies_in() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    dockerfile = (ROOT / "deploy/prometheus/Dockerfile").read_text()
    assert re.search(r"^COPY .*deploy/prometheus/alerts\.yml /etc/prometheus/$", dockerfile, re.M)
    exporter = (ROOT / "deploy/postgres-exporter/Dockerfile").read_text()
    assert "PG_EXPORTER_EXTEND_QUERY_PATH=/etc/prometheus-postgres-exporter/queries.yaml" in (
        exporter
    )
