"""Automatic failover on the compose HA variant as a client sees it: fault → first
acknowledged upload through the service.

    .venv/bin/python -m loadtests.benchmarks.compose_ha_failover --rounds 5

One HA stack (``replikit compose up --variant ha``: 3 etcd, 3 Patroni nodes, synchronous
replication, two app instances behind HAProxy, upload rate limit off) under a project name of
its own, removed with its volumes afterwards. Each round streams uploads through the load
balancer and injects one fault, with no failover command afterwards:

* ``crash``: the leader's container is killed (SIGKILL: agent and PostgreSQL gone, a lost
  machine); the lease must expire (ttl) before another node may take over. Then the
  container is started again and rejoins by itself.
* ``partition``: the leader is cut off the peer network (``docker network disconnect``):
  it can reach neither etcd nor the other nodes, while its clients still reach it. It demotes
  itself; another node is elected once its lease expires. Then it is reconnected and rejoins.

The window runs from the fault (the docker command returning) to the sending of the first
upload that is then acknowledged. Rounds alternate between the two faults; the cluster is
whole (one writer, both replicas streaming, a synchronous standby) before each. Prints every
round, the medians, and how many acknowledged uploads were lost (expected: none).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.benchmarks.fault_rounds import RoundResult, run_rounds
from replication.compose.env import ensure_env_file, free_ports, read_env
from replication.compose.ha import HaStack
from replication.compose.stack import ComposeStack, Variant

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ("crash", "partition")


@contextlib.contextmanager
def ha_stack(scratch: Path) -> Iterator[tuple[HaStack, str]]:
    env_file = scratch / ".env"
    ensure_env_file(env_file, ports=free_ports())
    with env_file.open("a") as handle:
        handle.write("REPLIKIT_UPLOAD_RATE_LIMIT=0\n")
    stack = ComposeStack(
        root=ROOT,
        env_file=env_file,
        project_name=f"rkbenchha{uuid.uuid4().hex[:6]}",
        variant=Variant.HA,
    )
    try:
        stack.build()
        stack.up(timeout=300)
        yield HaStack(stack), f"http://127.0.0.1:{read_env(env_file)['REPLIKIT_HTTP_PORT']}"
    finally:
        stack.down(volumes=True)


def one_round(ha: HaStack, url: str, fault: str) -> RoundResult:
    old = ha.wait_settled()
    with running(AckedUploads(url)) as stream:
        time.sleep(2)
        aliases: list[str] = []
        if fault == "crash":
            ha.crash(old)
        else:
            aliases = ha.partition(old)
        fault_at = time.monotonic()
        window = stream.first_ack_sent_after(fault_at, within=90)
        new = ha.wait_writer(other_than=old)
        time.sleep(1)
    lost = len(stream.missing(url))
    if fault == "crash":
        ha.start(old)
    else:
        ha.reconnect(old, aliases)
    ha.wait_rejoined(old)
    return RoundResult(window, old, new, len(stream.acknowledged), lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each fault")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-ha-"))
    try:
        with ha_stack(scratch) as (ha, url):
            run_rounds(args.rounds, FAULTS, lambda fault: one_round(ha, url, fault))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
