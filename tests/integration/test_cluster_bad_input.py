"""Every bad input to `cluster up` gets one sentence, a non-zero exit, and touches nothing."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.cluster import Cluster
from tests.integration.clusters import free_base_port, reachable_temp_dir, replikit


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = reachable_temp_dir("replikit-bad-input-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def assert_one_sentence_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def held_port_range() -> tuple[int, socket.socket]:
    """A free 3-port range whose middle port this process then holds. Another process may
    take a port between the check and the bind (a CI run lost that race once): pick again."""
    for _ in range(20):
        base = free_base_port(3)
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", base + 1))
        except OSError:
            holder.close()
            continue
        return base, holder
    raise AssertionError("no free 3-port range in 20 tries")


def test_port_in_use_names_the_port_and_its_holder(workdir: Path) -> None:
    base, holder = held_port_range()
    with holder:
        holder.listen()
        result = replikit(
            "cluster", "up", "--base-port", str(base), "--data-dir", str(workdir / "c")
        )
    assert result.returncode != 0
    assert_one_sentence_error(
        result.stderr, f"Port {base + 1}", f"pid {os.getpid()}", "--base-port"
    )
    assert not (workdir / "c").exists()


def test_missing_binaries_say_which_package_installs_them(workdir: Path) -> None:
    empty = workdir / "bin"
    empty.mkdir()
    result = replikit(
        "cluster",
        "up",
        "--pg-bin",
        str(empty),
        "--base-port",
        str(free_base_port(3)),
        "--data-dir",
        str(workdir / "c"),
    )
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, "initdb", "apt-get install postgresql")
    assert not (workdir / "c").exists()


def test_data_dir_holding_other_files_is_refused_and_left_alone(workdir: Path) -> None:
    other = workdir / "c"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = replikit(
        "cluster", "up", "--base-port", str(free_base_port(3)), "--data-dir", str(other)
    )
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, str(other), "not a replikit cluster")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    down = replikit("cluster", "down", "--purge", "--data-dir", str(other))
    assert down.returncode != 0
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("replicas", ["-1", "9"])
def test_replicas_out_of_range_is_refused(workdir: Path, replicas: str) -> None:
    result = replikit(
        "cluster",
        "up",
        "--replicas",
        replicas,
        "--base-port",
        str(free_base_port(3)),
        "--data-dir",
        str(workdir / "c"),
    )
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, "between 0 and 8", replicas)
    assert not (workdir / "c").exists()


@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("--wal-keep-size", "1G", "like 256MB or 4GB"),
        ("--wal-keep-size", "-1", "like 256MB or 4GB"),
        ("--max-slot-wal-keep-size", "4 GB", "or -1 for no limit"),
        ("--max-slot-wal-keep-size", "unlimited", "or -1 for no limit"),
    ],
)
def test_wal_sizes_that_postgresql_would_refuse_are_refused_first(
    workdir: Path, option: str, value: str, hint: str
) -> None:
    result = replikit("cluster", "up", option, value, "--data-dir", str(workdir / "c"))
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, option, hint, repr(value))
    assert not (workdir / "c").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres account only matters as root")
def test_data_dir_the_postgres_account_cannot_reach_is_refused(workdir: Path) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    result = replikit(
        "cluster", "up", "--base-port", str(free_base_port(3)), "--data-dir", str(private / "c")
    )
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, str(private), "chmod o+x")
    assert not (private / "c").exists()


def test_commands_on_a_missing_cluster_say_how_to_create_one(workdir: Path) -> None:
    for command in ("status", "env"):
        result = replikit("cluster", command, "--data-dir", str(workdir / "none"))
        assert result.returncode != 0
        assert_one_sentence_error(result.stderr, "replikit cluster up")
    down = replikit("cluster", "down", "--data-dir", str(workdir / "none"))
    assert down.returncode == 0
    assert "nothing to stop" in down.stdout


def test_different_base_port_for_an_existing_cluster_is_refused(cluster: Cluster) -> None:
    result = replikit(
        "cluster",
        "up",
        "--base-port",
        str(cluster.state.base_port + 50),
        "--data-dir",
        str(cluster.data_dir),
    )
    assert result.returncode != 0
    assert_one_sentence_error(result.stderr, f"base port {cluster.state.base_port}")
