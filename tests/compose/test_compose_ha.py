"""The HA variant (Patroni + etcd in containers) under the two faults it exists for, on one
shared stack: the leader's container crashes, and the leader is cut off from etcd and the
other nodes while its clients still reach it. No failover command is run in either: Patroni
elects, the service finds the new writer, and nothing acknowledged is lost.

"Never two writers" is checked three ways: no sample of the nodes (every 0.2 s, over SQL)
shows two out of recovery; every upload the old leader acknowledged lies on the new
timeline's history (its LSN at or before the fork point in the new timeline's .history
file), every one the new leader acknowledged after it; and the old leader's last
acknowledgement came before the new leader's first upload was sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loadtests.benchmarks.acked_uploads import AckedUploads, Receipt, running
from replication.compose.ha import HaStack
from replication.compose.stack import Variant
from replication.managers.patroni.config import DEFAULT_TTL
from replication.probe import NodeReading
from replication.topology import Manager, SyncMode, require_state
from tests.compose.stacks import ROOT, api_url, compose_stack, leftovers

pytestmark = [pytest.mark.compose, pytest.mark.destructive]

SAMPLE_INTERVAL = 0.2


@pytest.fixture(scope="module")
def ha(ha_images: None) -> Iterator[HaStack]:
    with compose_stack("hacompose", Variant.HA, REPLIKIT_UPLOAD_RATE_LIMIT="0") as stack:
        yield HaStack(stack)
        project = stack.project_name
        stack.down(volumes=True)
        assert project is not None
        assert leftovers(project) == {"containers": [], "volumes": [], "networks": []}


@dataclass
class Observer:
    """Samples which nodes answer out of recovery, and reads one image through the load
    balancer, until stopped."""

    ha: HaStack
    url: str
    image_id: str
    writers: list[tuple[float, list[str]]] = field(default_factory=list)
    reads: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample_writers(self) -> None:
        while not self.stop.is_set():
            self.writers.append((time.monotonic(), self.ha.writers()))
            time.sleep(SAMPLE_INTERVAL)

    def read(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    status = client.get(f"{self.url}/api/v1/images/{self.image_id}").status_code
                except httpx.HTTPError:
                    status = 0
                self.reads.append((time.monotonic(), status))
                time.sleep(0.05)

    def first_sample(self, after: float, condition: str, node: str) -> float:
        """When ``node`` was first seen (after ``after``) out of or back in recovery."""
        for moment, writers in self.writers:
            if moment > after and (node in writers) == (condition == "writer"):
                return moment
        raise AssertionError(f"{node} was never seen as {condition} after the fault")


@contextlib.contextmanager
def observing(ha: HaStack, url: str) -> Iterator[Observer]:
    """An :class:`Observer` sampling in two threads for the ``with`` block."""
    image_id = one_upload(url)
    observer = Observer(ha=ha, url=url, image_id=image_id)
    threads = [
        threading.Thread(target=observer.sample_writers, daemon=True),
        threading.Thread(target=observer.read, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield observer
    finally:
        observer.stop.set()
        for thread in threads:
            thread.join(30)


def one_upload(url: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    response = httpx.post(
        f"{url}/api/v1/images/upload", files={"file": ("r.png", buffer.getvalue())}, timeout=10
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def by_node(receipts: list[Receipt], node: str) -> list[Receipt]:
    return [r for r in receipts if r.node.split(":")[0] == node]


def test_crash_of_the_leader_container_under_uploads_loses_no_acknowledged_upload(
    ha: HaStack,
) -> None:
    url = api_url(ha.stack)
    leader = ha.wait_settled()
    with running(AckedUploads(url)) as stream:
        time.sleep(2)
        ha.crash(leader)
        down_at = time.monotonic()
        new = ha.wait_writer(other_than=leader, timeout=DEFAULT_TTL + 30)
        window = stream.first_ack_sent_after(down_at, within=DEFAULT_TTL + 30)
        time.sleep(1)
    print(f"leader {leader} crashed -> {new}; first acknowledged upload {window:.2f} s on")
    assert by_node(stream.receipts, leader), "the old leader took no upload before the crash"
    after = [r for r in stream.receipts if r.sent_at > down_at]
    assert after
    assert all(r.node.split(":")[0] == new for r in after)
    assert stream.missing(url) == [], f"of {len(stream.acknowledged)} acknowledged"

    # Started again, the old leader's agent makes it follow the new one by itself.
    ha.start(leader)
    timeline = ha.wait_rejoined(leader)
    assert ha.writers() == [new]
    assert timeline == ha.timeline(new)
    assert stream.missing(url) == []


def test_partitioned_leader_demotes_itself_and_rejoins_with_never_two_writers(
    ha: HaStack,
) -> None:
    url = api_url(ha.stack)
    leader = ha.wait_settled()
    with observing(ha, url) as observer, running(AckedUploads(url)) as stream:
        time.sleep(2)
        aliases = ha.partition(leader)
        cut_at = time.monotonic()
        new = ha.wait_writer(other_than=leader, timeout=DEFAULT_TTL + 30)
        window = stream.first_ack_sent_after(cut_at, within=DEFAULT_TTL + 30)
        time.sleep(1)
        ha.reconnect(leader, aliases)
        timeline = ha.wait_rejoined(leader)
        time.sleep(1)
    demoted_at = observer.first_sample(cut_at, "not writer", leader)
    promoted_at = observer.first_sample(cut_at, "writer", new)
    print(
        f"leader {leader} partitioned -> {new}: demoted {demoted_at - cut_at:.1f} s, new "
        f"writer {promoted_at - cut_at:.1f} s, first acknowledged upload {window:.2f} s on"
    )

    # It demoted itself (its clients still reached it) before its lease could expire.
    assert demoted_at - cut_at < DEFAULT_TTL
    assert demoted_at < promoted_at
    doubles = [(round(t - cut_at, 1), w) for t, w in observer.writers if len(w) > 1]
    assert doubles == [], "two writers at once"

    old_acks, new_acks = by_node(stream.receipts, leader), by_node(stream.receipts, new)
    assert old_acks
    assert new_acks
    assert {r.node.split(":")[0] for r in stream.receipts} <= {leader, new}
    assert max(r.acked_at for r in old_acks) < min(r.sent_at for r in new_acks)
    new_timeline = ha.timeline(new)
    assert new_timeline is not None
    fork = ha.history(new, new_timeline)[-1]
    assert fork.timeline == new_timeline - 1
    assert all(r.lsn <= fork.lsn for r in old_acks), "the old leader wrote past the fork"
    assert all(r.lsn > fork.lsn for r in new_acks)
    assert stream.missing(url) == [], f"of {len(stream.acknowledged)} acknowledged"

    # Reads never stopped: the replicas (and the isolated node, read-only) kept serving.
    failed = [round(t - cut_at, 1) for t, status in observer.reads if status != 200]
    assert len(observer.reads) > 100
    assert failed == [], "reads failed at (s after the partition)"
    # Back on the network, the old leader was rewound onto the new timeline and streams.
    assert timeline == new_timeline


def replikit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "replikit"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


def test_the_attached_stack_is_left_to_patroni_and_patronictl_switches_over(
    ha: HaStack,
) -> None:
    """`attach-compose` records the stack as Patroni's: `failover` refuses in one sentence,
    the documented `patronictl switchover` in a node container moves the leader, `status`
    follows it, and `kill primary` crashes that container, which Patroni replaces."""
    leader = ha.wait_settled()
    readings = ha.readings()
    leading = readings[leader]
    assert isinstance(leading, NodeReading)
    standby = next(n for n, r in leading.replication.items() if r.get("sync_state") == "sync")
    project = ha.stack.project_name
    assert project is not None
    with tempfile.TemporaryDirectory(prefix="replikit-ha-state-") as scratch:
        d = ("--data-dir", str(Path(scratch) / "compose"))
        attached = replikit_cli(
            "cluster", "attach-compose", "--env-file", str(ha.stack.env_file), "-p", project, *d
        )
        assert attached.returncode == 0, attached.stderr
        state = require_state(Path(d[1]))
        assert (state.manager, state.sync, state.primary) == (Manager.PATRONI, SyncMode.ON, leader)
        refused = replikit_cli("cluster", "failover", "--force", *d)
        assert refused.returncode != 0
        assert "is left to Patroni on this compose HA stack" in refused.stderr
        assert ha.writers() == [leader]

        ha.patronictl(leader, "switchover", "--leader", leader, "--candidate", standby, "--force")
        assert ha.wait_writer(other_than=leader) == standby
        ha.wait_settled()
        status = replikit_cli("cluster", "status", "--json", *d)
        roles = {row["name"]: row["role"] for row in json.loads(status.stdout)["nodes"]}
        assert (roles[standby], roles[leader]) == ("primary", "replica"), roles
        assert require_state(Path(d[1])).primary == standby

        killed = replikit_cli("cluster", "kill", "primary", *d)
        assert killed.returncode == 0, killed.stderr
        assert f"{standby} crashed (the primary)" in killed.stdout
        assert ha.wait_writer(other_than=standby, timeout=DEFAULT_TTL + 30) != standby
        ha.start(standby)
        ha.wait_rejoined(standby)
