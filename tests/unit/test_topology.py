from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from replication.errors import BadInputError, DataDirConflictError
from replication.topology import (
    ClusterState,
    Passwords,
    SyncMode,
    build_state,
    load_state,
    save_state,
)


def make(replicas: int = 2, base_port: int = 6432) -> ClusterState:
    return build_state(
        replicas=replicas, sync=SyncMode.OFF, base_port=base_port, pg_bin=Path("/x"), pg_major=15
    )


def test_nodes_are_named_and_numbered_from_the_base_port() -> None:
    state = make(3, 7000)
    assert [(n.name, n.port) for n in state.nodes] == [
        ("pg0", 7000),
        ("pg1", 7001),
        ("pg2", 7002),
        ("pg3", 7003),
    ]
    assert state.primary == "pg0"
    assert [n.name for n in state.replicas] == ["pg1", "pg2", "pg3"]


@pytest.mark.parametrize(("replicas", "port"), [(-1, 6432), (9, 6432), (2, 80), (2, 65534)])
def test_shape_out_of_range_is_refused(replicas: int, port: int) -> None:
    with pytest.raises(BadInputError):
        make(replicas, port)


def test_passwords_are_random_and_url_safe() -> None:
    first, second = Passwords.generate(), Passwords.generate()
    assert first != second
    assert len({first.superuser, first.replication, first.app}) == 3
    state = make()
    url = urlsplit(state.app_url(state.nodes[1]))
    assert url.password == state.passwords.app
    assert (url.username, url.port, url.path) == ("app", 6433, "/replikit")


def test_state_round_trips_with_private_mode(tmp_path: Path) -> None:
    state = make()
    save_state(tmp_path, state)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    assert load_state(tmp_path) == state


def test_missing_or_empty_dir_has_no_state_and_foreign_files_conflict(tmp_path: Path) -> None:
    assert load_state(tmp_path / "missing") is None
    assert load_state(tmp_path) is None
    (tmp_path / "data.bin").write_bytes(b"x")
    with pytest.raises(DataDirConflictError):
        load_state(tmp_path)


def test_unknown_node_names_the_known_ones() -> None:
    with pytest.raises(BadInputError, match="pg0, pg1, pg2"):
        make().node("pg7")
