"""Through the poolers of the default stack: the consistency experiment keeps every promise;
then crash the compose primary under a stream of uploads, fail over, lose nothing, rejoin, and
the stack comes back clean with `up -d`; `down -v` then leaves nothing behind."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from replication.errors import ClusterTimeoutError
from tests.compose.stacks import api_url, attach, compose_stack, leftovers, replikit

pytestmark = [pytest.mark.compose, pytest.mark.destructive]


def test_crash_of_the_primary_under_uploads_loses_no_acknowledged_upload(
    docker_images: None,
) -> None:
    with (
        compose_stack("failover", REPLIKIT_SYNC_MODE="on", REPLIKIT_UPLOAD_RATE_LIMIT="0") as stack,
        tempfile.TemporaryDirectory(prefix="replikit-compose-state-") as state,
    ):
        project = stack.project_name
        assert project is not None
        data_dir = ["--data-dir", str(Path(state) / "compose")]
        attach(stack, data_dir[1])
        # The app instances reach every node through its pooler (the stack's default): the
        # tokens' promises hold with replicas that disagree (pg2 replays 1.5 s late).
        results = Path(state) / "results"
        replikit(
            "experiment", "consistency", "--consistency", "read_your_writes,monotonic",
            "--apply-delay", "0,1500ms", "--clients", "6", "--duration", "5", "--results",
            str(results), *data_dir,
        )  # fmt: skip
        (out,) = results.iterdir()
        modes = json.loads((out / "summary.json").read_text())["modes"]
        for mode in modes:
            anomalies = mode["anomalies"]
            assert anomalies["broken_promises"] == 0, (mode["mode"], anomalies)
            assert anomalies["lost_writes"] == 0, (mode["mode"], anomalies)
            assert anomalies["writes_verified"] > 0, (mode["mode"], anomalies)
        with running(AckedUploads(api_url(stack))) as stream:
            time.sleep(3)
            # `kill` returns once the node refuses connections: the crash is done by then.
            replikit("cluster", "kill", "primary", *data_dir)
            down_at = time.monotonic()
            replikit("cluster", "failover", *data_dir)
            window = stream.first_ack_sent_after(down_at)
            time.sleep(2)
        assert len(stream.acknowledged) > 10
        print(f"compose failover: first acknowledged upload sent {window:.2f} s after the crash")

        status = replikit("cluster", "status", "--json", *data_dir)
        roles = {node["name"]: node["role"] for node in json.loads(status)["nodes"]}
        # Each node's pooler answers for itself, also the crashed node's.
        poolers = {node["name"]: node["pooler_servers"] for node in json.loads(status)["nodes"]}
        assert all(servers is not None for servers in poolers.values()), poolers
        assert roles["pg0"] != "primary"
        assert sorted(roles.values()).count("primary") == 1, roles
        assert stream.missing(api_url(stack)) == [], f"of {len(stream.acknowledged)} acked"

        # Started before its rejoin, the fenced former primary refuses to run at all.
        stack.run("up", "-d", "--no-build", what="up -d before the rejoin")
        with pytest.raises(ClusterTimeoutError, match="fenced former primary"):
            stack.wait_ready(services=["pg0"], timeout=90)

        replikit("cluster", "rejoin", "pg0", *data_dir)
        stack.run("up", "-d", "--no-build", what="up -d after the failover")
        stack.wait_ready(timeout=180)
        assert stream.missing(api_url(stack)) == [], f"of {len(stream.acknowledged)} acked"

        stack.down(volumes=True)
        assert leftovers(project) == {"containers": [], "volumes": [], "networks": []}
