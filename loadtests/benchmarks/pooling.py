"""Issue 24's scaling bench: the compose stack scaled out with and without its poolers.

    .venv/bin/python -m loadtests.benchmarks.pooling                  # 2, 4, 8, 16 instances
    .venv/bin/python -m loadtests.benchmarks.pooling --instances 2 --instances 16 --seconds 20

One stack of its own (project ``rkbench-pool-<random>``, ports and subnet of its own, removed
with its volumes afterwards) from the images as they are (``make compose-up`` or
``replikit compose build`` made them). For each instance count, both paths run one after the
other, in alternating order: ``pooled`` (the default stack: each instance reaches node i
through ``pooler<i>``) and ``direct`` (``REPLIKIT_PG<i>_ENDPOINT=pg<i>:5432``: straight to the
nodes, as before the poolers). Each run: ``app`` scaled to N (recreated with the path's URLs),
every instance UP in HAProxy, then wrk on one image's metadata (eventual reads, spread over the
replicas) through the load balancer with the same connections for every run, while a sampler
reads every node's backends every half second. Reported per run: answers per second by
status, errors (anything but 200, socket errors included), p50/p99, and the highest count of
the app role's backends and of all client backends on any node, against ``max_connections``.
Results: ``results/bench-pooling-<timestamp>/pooling.json`` and ``pooling.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from loadtests.benchmarks.scratch import scratch_dir
from loadtests.benchmarks.wrk import parse_wrk, wrk_command
from loadtests.sample_images import make_image
from replication.compose.balancer import app_servers_up
from replication.compose.env import ensure_env_file, free_ports, read_env
from replication.compose.stack import ComposeStack

ROOT = Path(__file__).resolve().parents[2]
NODES = ("pg0", "pg1", "pg2")
PATHS = {
    "pooled": {},
    "direct": {f"REPLIKIT_{node.upper()}_ENDPOINT": f"{node}:5432" for node in NODES},
}

# wrk counts answers by status per thread; done() prints them as one JSON line.
STATUS_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  io.write("STATUSES {" .. table.concat(parts, ", ") .. "}\\n")
end
"""


@dataclass
class Run:
    instances: int
    path: str
    seconds: float
    connections: int
    answers_per_second: float = 0.0
    ok_per_second: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    app_backends_max: int = 0  # the app role's, on the busiest node
    client_backends_max: int = 0  # every client backend, on the busiest node
    max_connections: int = 0


class BackendSampler:
    """Every node's backends, read every half second as the superuser on its published port."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.app_max = 0
        self.client_max = 0
        self.max_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    async def _connect(self, node: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1",
            port=int(self.settings[f"REPLIKIT_{node.upper()}_PORT"]),
            user="postgres",
            password=self.settings["REPLIKIT_SUPERUSER_PASSWORD"],
            database="postgres",
            timeout=10,
        )

    async def _loop(self) -> None:
        # Connected before the load starts: a node full of clients still admits the
        # superuser (superuser_reserved_connections), but a new connection costs a fork.
        connections = [await self._connect(node) for node in NODES]
        try:
            self.max_connections = int(await connections[0].fetchval("SHOW max_connections"))
            while not self._stop.is_set():
                for connection in connections:
                    row = await connection.fetchrow(
                        "SELECT count(*) FILTER (WHERE usename = 'app') AS app, count(*) AS all "
                        "FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    )
                    assert row is not None
                    self.app_max = max(self.app_max, int(row["app"]))
                    self.client_max = max(self.client_max, int(row["all"]))
                await asyncio.sleep(0.5)
        finally:
            for connection in connections:
                await connection.close()

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextmanager
def bench_stack(scratch: Path) -> Iterator[ComposeStack]:
    env_file = scratch / ".env"
    ensure_env_file(env_file, ports=free_ports())
    with env_file.open("a") as handle:
        handle.write("REPLIKIT_UPLOAD_RATE_LIMIT=0\n")
    stack = ComposeStack(
        root=ROOT, env_file=env_file, project_name=f"rkbench-pool-{uuid.uuid4().hex[:6]}"
    )
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        stack.down(volumes=True)


def scale(stack: ComposeStack, instances: int, path: str) -> None:
    """``app`` at ``instances`` on ``path``'s URLs (recreated), all of them UP behind HAProxy."""
    stack.run(
        "up", "-d", "--no-build", "--no-deps", "--force-recreate", "--scale",
        f"app={instances}", "app", what=f"scaling app to {instances} ({path})", timeout=600,
        overrides=PATHS[path],
    )  # fmt: skip
    stack.wait_ready(services=["app", "lb"], timeout=600)
    deadline = time.monotonic() + 120
    admin = read_env(stack.env_file)["REPLIKIT_ADMIN_PORT"]
    while app_servers_up(admin) < instances:
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy did not see {instances} app instances UP")
        time.sleep(1)


def seed_image(base: str) -> str:
    image = make_image("PNG", 96, seed=24)
    answer = httpx.post(
        f"{base}/api/v1/images/upload",
        files={"file": (image.filename, image.data, image.content_type)},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def measure(
    stack: ComposeStack, run: Run, url: str, script: Path, settings: dict[str, str]
) -> None:
    command = wrk_command(
        url,
        seconds=run.seconds,
        connections=run.connections,
        script=script,
        headers={"X-Replikit-Consistency": "eventual"},
    )
    with BackendSampler(settings) as sampler:
        completed = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=run.seconds + 60
        )
    result = parse_wrk(completed.stdout)
    match = re.search(r"^STATUSES (\{.*\})$", completed.stdout, re.MULTILINE)
    run.statuses = json.loads(match.group(1)) if match else {}
    answered = sum(run.statuses.values())
    run.socket_errors = max(result.failed - (answered - run.statuses.get("200", 0)), 0)
    run.errors = answered - run.statuses.get("200", 0) + run.socket_errors
    run.answers_per_second = answered / result.seconds
    run.ok_per_second = run.statuses.get("200", 0) / result.seconds
    run.p50_ms, run.p99_ms = result.p50_ms, result.p99_ms
    run.app_backends_max = sampler.app_max
    run.client_backends_max = sampler.client_max
    run.max_connections = sampler.max_connections


def markdown(runs: list[Run]) -> str:
    lines = [
        "| instances (2 workers each) | path | 200/s | errors (by status) | p50 ms | p99 ms "
        "| app backends, busiest node | client backends, busiest node / max_connections |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        by_status = ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items()) if s != "200")
        if run.socket_errors:
            by_status = ", ".join(filter(None, [by_status, f"socket: {run.socket_errors}"]))
        lines.append(
            f"| {run.instances} | {run.path} | {run.ok_per_second:.0f} | {run.errors}"
            f"{f' ({by_status})' if by_status else ''} | {run.p50_ms:.1f} | {run.p99_ms:.1f} "
            f"| {run.app_backends_max} | {run.client_backends_max} / {run.max_connections} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, action="append", help="default 2 4 8 16")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=400, help="wrk connections")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    counts = args.instances or [2, 4, 8, 16]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.results / f"bench-pooling-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with scratch_dir("replikit-bench-pooling-") as scratch, bench_stack(scratch) as stack:
        settings = read_env(stack.env_file)
        base = f"http://127.0.0.1:{settings['REPLIKIT_HTTP_PORT']}"
        url = f"{base}/api/v1/images/{seed_image(base)}"
        script = scratch / "statuses.lua"
        script.write_text(STATUS_SCRIPT)
        for index, instances in enumerate(counts):
            order = ["pooled", "direct"] if index % 2 == 0 else ["direct", "pooled"]
            for path in order:
                scale(stack, instances, path)
                run = Run(instances, path, args.seconds, args.connections)
                measure(stack, run, url, script, settings)
                runs.append(run)
                print(markdown([run]).splitlines()[-1], flush=True)
                (out / "pooling.json").write_text(
                    json.dumps([asdict(r) for r in runs], indent=2) + "\n"
                )
    report = markdown(sorted(runs, key=lambda r: (r.instances, r.path != "direct")))
    (out / "pooling.md").write_text(report)
    print(report)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
