"""How attach-compose tells the HA variant (Patroni agents) from the default stack."""

from __future__ import annotations

import pytest

from replication.compose import attach as compose_attach
from replication.compose.attach import runs_patroni


def test_a_compose_file_with_etcd_members_runs_patroni() -> None:
    assert runs_patroni({"etcd0": {}, "pg0": {}}, None)
    assert not runs_patroni({"pg0": {}, "app": {}}, None)


def test_the_default_file_attached_to_the_ha_project_is_recognised_by_its_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str, bool]] = []

    def containers(docker: str, project: str, service: str, *, running: bool) -> list[str]:
        asked.append((project, service, running))
        return ["c0ffee"] if project == "replikit-ha" else []

    monkeypatch.setattr("replication.compose.attach.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(compose_attach, "service_containers", containers)
    assert runs_patroni({"pg0": {}}, "replikit-ha")
    assert not runs_patroni({"pg0": {}}, "replikit")
    assert asked == [("replikit-ha", "etcd0", True), ("replikit", "etcd0", True)]
    # No project name known: nothing to ask, and no etcd in the file.
    assert not runs_patroni({"pg0": {}}, None)
    assert len(asked) == 2
