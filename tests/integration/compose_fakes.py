"""A local cluster dressed as a compose stack: a compose state file plus the fake compose
program (tests/integration/fake_docker.py) that acts on the local nodes, as v1 or v2."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from replication.cluster import Cluster
from replication.compose.command import OVERRIDE_VARIABLE, compose_program
from replication.drivers.local.driver import LocalDriver
from replication.topology import ServiceEndpoints, save_state
from tests.integration.clusters import reachable_temp_dir

ROOT = Path(__file__).resolve().parents[2]
Persona = Literal["v1", "v2"]
VERSIONS: dict[Persona, str] = {"v1": "1.29.2", "v2": "2.29.7"}
COMPOSE_TEXT = """services:
  app:
    environment:
      REPLIKIT_UPLOAD_RATE_LIMIT: ${REPLIKIT_UPLOAD_RATE_LIMIT:-60}
"""


@dataclass
class FakeCompose:
    data_dir: Path  # the compose cluster's state directory
    env: dict[str, str]  # what a process needs to call the fake instead of compose

    def _log(self) -> list[list[str]]:
        lines = Path(self.env["FAKE_DOCKER_LOG"]).read_text().splitlines()
        return [json.loads(line) for line in lines]

    def programs(self) -> set[str]:
        """How compose was called: ``docker-compose`` (v1) and/or ``compose`` (v2)."""
        return {call[0] for call in self._log() if call[0] != "docker"}

    def calls(self) -> list[list[str]]:
        """Every compose call so far, without the program name."""
        return [call[1:] for call in self._log() if call[0] != "docker"]

    def docker_calls(self) -> list[list[str]]:
        """Every call of the docker client itself (``docker ps``), from its verb on."""
        return [call[1:] for call in self._log() if call[0] == "docker"]

    def verbs(self) -> list[list[str]]:
        """Every call from its verb on (global options removed)."""
        from tests.integration.fake_docker import split_globals

        return [split_globals(call)[1] for call in self.calls()]


@contextlib.contextmanager
def fake_compose(
    local: Cluster,
    *,
    persona: Persona = "v1",
    project: str | None = "rktest",
    service: ServiceEndpoints | None = None,
    stack_env: str = "REPLIKIT_UPLOAD_RATE_LIMIT=0\n",
) -> Iterator[FakeCompose]:
    """A compose state for ``local``'s nodes; the temporary files go afterwards.

    The recorded compose file only carries the app's rate-limit default; ``stack_env`` is the
    recorded env file."""
    driver = local.driver
    assert isinstance(driver, LocalDriver)
    work = reachable_temp_dir("replikit-fake-compose-")
    try:
        bin_dir = work / "bin"
        bin_dir.mkdir()
        for name in ("docker", "docker-compose"):
            fake = bin_dir / name
            fake.write_text(
                f'#!/bin/sh\nexec {sys.executable} -m tests.integration.fake_docker {name} "$@"\n'
            )
            fake.chmod(0o755)
        program = bin_dir / ("docker-compose" if persona == "v1" else "docker")
        nodes = {
            node.name: {
                "env": {
                    **driver.script_env(node),
                    "REPLIKIT_PRIMARY_HOST": "127.0.0.1",
                    "SCRIPTS": str(driver.scripts_dir),
                    "LOG_FILE": str(driver.log_file(node)),
                }
            }
            for node in local.state.nodes
        }
        data_dir = work / "compose"
        data_dir.mkdir()
        state = local.state.model_copy(deep=True)
        state.driver = "compose"
        state.compose_file = str(work / "docker-compose.yml")
        (work / "docker-compose.yml").write_text(COMPOSE_TEXT)
        state.compose_project = project
        state.compose_env_file = str(work / "stack.env")
        (work / "stack.env").write_text(stack_env)
        state.service = service
        for node in state.nodes:  # "containers" reach each other on loopback ports here
            node.internal_host, node.internal_port = "127.0.0.1", node.port
        save_state(data_dir, state)
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            OVERRIDE_VARIABLE: str(program) if persona == "v1" else f"{program} compose",
            "FAKE_COMPOSE_VERSION": VERSIONS[persona],
            "FAKE_DOCKER_HAS_COMPOSE": "1" if persona == "v2" else "0",
            "FAKE_COMPOSE_PROJECT": project or "",
            "FAKE_DOCKER_LOG": str(work / "calls.jsonl"),
            "FAKE_DOCKER_NODES": json.dumps(nodes),
            "PYTHONPATH": str(ROOT),
        }
        (work / "calls.jsonl").touch()
        yield FakeCompose(data_dir=data_dir, env=env)
    finally:
        compose_program.cache_clear()
        shutil.rmtree(work, ignore_errors=True)
