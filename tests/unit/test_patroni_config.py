"""The Patroni agent configuration the HA containers write at start, from their environment
(replication/managers/patroni/config.py, shared with the local Patroni manager)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from replication.managers.patroni import config as patroni_config
from replication.managers.patroni.config import (
    ContainerConfigError,
    Timing,
    agent_config,
    container_agent,
    dcs_settings,
)

ENV = {
    "REPLIKIT_NODE_NAME": "pg1",
    "REPLIKIT_PEER_ADDRESS": "10.0.0.2",
    "REPLIKIT_ETCD_HOSTS": "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379",
    "PGDATA": "/var/lib/postgresql/data/pgdata",
    "REPLIKIT_SUPERUSER_PASSWORD": "su",
    "REPLIKIT_REPLICATION_PASSWORD": "repl",
    "REPLIKIT_PATRONI_REST_PASSWORD": "rest",
    "REPLIKIT_PATRONI_TTL": "",
}


def test_a_container_agent_is_reached_at_its_peer_address_and_syncs_by_default() -> None:
    config = agent_config(container_agent(ENV))
    assert config["name"] == "pg1"
    assert config["restapi"]["connect_address"] == "10.0.0.2:8008"
    assert config["restapi"]["listen"] == "0.0.0.0:8008"
    assert config["postgresql"]["connect_address"] == "10.0.0.2:5432"
    assert config["etcd3"]["hosts"] == ENV["REPLIKIT_ETCD_HOSTS"]
    assert config["postgresql"]["authentication"]["superuser"] == {
        "username": "postgres",
        "password": "su",
    }
    assert config["bootstrap"]["replikit"]["command"].endswith("patroni-bootstrap.sh")
    dcs = config["bootstrap"]["dcs"]
    # An empty variable means the shared default, not zero.
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 1, 5)
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is True
    assert config["postgresql"]["parameters"]["replikit.node_name"] == "pg1"


def test_the_local_manager_and_the_containers_share_the_cluster_settings() -> None:
    container = agent_config(container_agent({**ENV, "REPLIKIT_SYNC_MODE": "quorum"}))
    local = dcs_settings(timing=Timing(), sync="quorum", wal_keep_size="256MB")
    assert container["bootstrap"]["dcs"] == local


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"REPLIKIT_PATRONI_REST_PASSWORD": ""}, "REPLIKIT_PATRONI_REST_PASSWORD must be set"),
        ({"REPLIKIT_PEER_ADDRESS": " "}, "REPLIKIT_PEER_ADDRESS must be set"),
        ({"REPLIKIT_PATRONI_TTL": "10"}, "at least 20"),
        ({"REPLIKIT_PATRONI_TTL": "20s"}, "whole number of seconds"),
        ({"REPLIKIT_PATRONI_RETRY_TIMEOUT": "10"}, "must not exceed REPLIKIT_PATRONI_TTL"),
        ({"REPLIKIT_SYNC_MODE": "always"}, "off, on or quorum"),
    ],
)
def test_bad_variables_are_refused_naming_the_variable(
    change: dict[str, str], message: str
) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        container_agent({**ENV, **change})


def test_the_generator_writes_a_private_file_or_one_sentence(tmp_path: Path) -> None:
    script = Path(patroni_config.__file__)
    out = tmp_path / "patroni.yml"
    done = subprocess.run(
        [sys.executable, str(script), str(out)], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["scope"] == "replikit"

    refused = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "other.yml")],
        env={**ENV, "REPLIKIT_NODE_NAME": ""},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("REPLIKIT_NODE_NAME must be set")
    assert not (tmp_path / "other.yml").exists()


def test_patroni_members_get_the_limit_from_the_container_environment_or_the_default() -> None:
    default = patroni_config.agent_config(patroni_config.container_agent(ENV))
    parameters = default["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert parameters["max_slot_wal_keep_size"] == patroni_config.DEFAULT_MAX_SLOT_WAL_KEEP_SIZE
    assert parameters["wal_keep_size"] == "256MB"
    chosen = patroni_config.container_agent({**ENV, "REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE": "10GB"})
    dcs = patroni_config.agent_config(chosen)["bootstrap"]["dcs"]
    assert dcs["postgresql"]["parameters"]["max_slot_wal_keep_size"] == "10GB"
