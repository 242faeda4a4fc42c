"""The soak's watcher: every ``interval`` seconds, what every process and node holds.

One sample (a line of ``watch.jsonl``) holds:

* **processes** (``/proc``): every process of the service instances the soak started (the
  instance's session: its worker, its forkserver and decode processes), of the cluster's
  PostgreSQL nodes (processes working in a node's PGDATA: postmaster, auxiliaries, backends),
  of its Patroni agents and etcd members (command lines naming the cluster's directory); each
  with RSS and PSS (``/proc/PID/smaps_rollup``) and open descriptors (``/proc/PID/fd``). A
  compose stack's processes live in containers and are not sampled (the SQL and service
  readings below are);
* **nodes** (SQL, as the cluster's superuser): backends by type and application
  (``pg_stat_activity``: ``replikit-service`` rows are the service's pooled connections, the
  only view of its pool sizes, which ``/metrics`` does not export), WAL on disk
  (``pg_ls_waldir()``), role and replica lag (:func:`replication.probe.cluster_status`);
* **service** (``/metrics`` of every instance, summed): requests in flight and 503s by reason;
* **requests** (the clients' log since the previous sample): count, failures by type, p99.

Beside the lines it keeps each watched quantity as a :class:`Series` for the growth check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests.experiments import analysis
from loadtests.experiments.consistency_records import RequestRecord
from loadtests.experiments.soak_checks import Series, error_type, is_failure
from loadtests.experiments.targets import LocalInstances, ServiceTarget
from replication.admin import admin_connect
from replication.probe import cluster_status
from replication.topology import ClusterState, NodeSpec, require_state

PROC = Path("/proc")
SQL_TIMEOUT_SECONDS = 5.0
BACKENDS_SQL = """
SELECT backend_type, coalesce(application_name, '') AS app, count(*) AS n
FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY 1, 2
"""
WAL_SQL = "SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()"
LIMITS_SQL = """
SELECT pg_size_bytes(current_setting('max_wal_size')) AS max_wal_size,
       pg_size_bytes(current_setting('wal_keep_size')) AS wal_keep_size,
       pg_size_bytes(current_setting('wal_segment_size')) AS wal_segment_size,
       current_setting('max_connections')::int AS max_connections
"""


@dataclass
class ProcessSample:
    pid: int
    role: str  # service, service-child, postgres, postmaster, patroni, etcd
    owner: str  # service-<i>, or the node / etcd member
    title: str
    rss_bytes: int | None
    pss_bytes: int | None
    fds: int | None


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, session id) from ``/proc/PID/stat``."""
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3])


def _cmdline(pid: str) -> list[str]:
    try:
        return (PROC / pid / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def memory(pid: int) -> tuple[int | None, int | None]:
    """RSS and PSS in bytes from ``smaps_rollup`` (None when the process is gone)."""
    found: dict[str, int] = {}
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                found[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return None, None
    return found.get("Rss"), found.get("Pss")


def descriptors(pid: int) -> int | None:
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None


def _postmaster_pids(data_dir: Path, nodes: list[NodeSpec]) -> dict[int, str]:
    found = {}
    for node in nodes:
        with contextlib.suppress(OSError, ValueError):
            pid = int((data_dir / node.name / "postmaster.pid").read_text().split("\n", 1)[0])
            found[pid] = node.name
    return found


def _cluster_process(
    pid: str, data_dir: Path, names: list[str], postmasters: dict[int, str]
) -> tuple[str, str, str] | None:
    """(role, owner, title) of a process of the cluster's, else None."""
    try:
        cwd = Path(os.readlink(PROC / pid / "cwd"))
    except OSError:
        cwd = None
    argv = _cmdline(pid)
    title = " ".join(argv)[:80]
    if cwd is not None and cwd.parent == data_dir and cwd.name in names:
        role = "postmaster" if int(pid) in postmasters else "postgres"
        return role, cwd.name, title
    if not any(str(data_dir) in arg for arg in argv):
        return None
    program = Path(argv[0]).name if argv else ""
    owner = next((n for n in names if any(re.search(rf"\b{n}\b", a) for a in argv)), "?")
    if program == "etcd" or program.startswith("etcd"):
        name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--name"), owner)
        return "etcd", name, title
    if any("patroni" in arg for arg in argv):
        return "patroni", owner, title
    return None


def scan_processes(
    data_dir: Path | None, nodes: list[NodeSpec], services: dict[int, str]
) -> list[ProcessSample]:
    """Every process of the service instances (by session id: ``services`` maps each
    instance's session leader to its name) and of the local cluster in ``data_dir``."""
    names = [node.name for node in nodes]
    postmasters = _postmaster_pids(data_dir, nodes) if data_dir is not None else {}
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None:
            continue
        pid = int(entry.name)
        if stat[1] in services:
            argv = _cmdline(entry.name)
            role = "service" if pid == stat[1] else "service-child"
            what = (role, services[stat[1]], " ".join(argv)[:80])
        elif data_dir is not None:
            what = _cluster_process(entry.name, data_dir, names, postmasters)  # type: ignore[assignment]
            if what is None:
                continue
        else:
            continue
        rss, pss = memory(pid)
        found.append(ProcessSample(pid, *what, rss, pss, descriptors(pid)))
    return found


async def _node_reading(state: ClusterState, node: NodeSpec, limits: bool) -> dict[str, Any]:
    connection = await admin_connect(state, node)
    try:
        rows = await connection.fetch(BACKENDS_SQL)
        reading: dict[str, Any] = {
            "backends": {f"{r['backend_type']}/{r['app']}": int(r["n"]) for r in rows},
            "client_backends": sum(
                int(r["n"]) for r in rows if r["backend_type"] == "client backend"
            ),
            "service_connections": sum(int(r["n"]) for r in rows if r["app"] == "replikit-service"),
            "wal_bytes": int(await connection.fetchval(WAL_SQL)),
        }
        if limits:
            reading["limits"] = dict(await connection.fetchrow(LIMITS_SQL))
        return reading
    finally:
        await connection.close()


async def read_nodes(state: ClusterState, limits: bool = False) -> dict[str, dict[str, Any]]:
    """Backends, WAL and (per the probe) role and lag of every node; a node that does not
    answer gets ``{"error": ...}``."""

    async def one(node: NodeSpec) -> tuple[str, dict[str, Any]]:
        try:
            return node.name, await asyncio.wait_for(
                _node_reading(state, node, limits), SQL_TIMEOUT_SECONDS
            )
        except Exception as error:
            return node.name, {"error": f"{type(error).__name__}: {error}"[:200]}

    readings = dict(await asyncio.gather(*(one(node) for node in state.nodes)))
    with contextlib.suppress(Exception):
        for row in await asyncio.wait_for(cluster_status(state), SQL_TIMEOUT_SECONDS):
            readings[row.name].update(
                role=row.role, lag_seconds=row.lag_seconds, lag_bytes=row.lag_bytes
            )
    return readings


def service_readings(texts: list[str]) -> dict[str, Any]:
    """In-flight requests and 503s by reason, summed over the instances' expositions."""
    totals: dict[str, Any] = {"instances": len(texts), "in_flight": 0.0, "unavailable": {}}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "replikit_in_flight_requests":
                    totals["in_flight"] += sample.value
                elif sample.name == "replikit_unavailable_total":
                    reason = sample.labels.get("reason", "?")
                    totals["unavailable"][reason] = (
                        totals["unavailable"].get(reason, 0) + sample.value
                    )
    return totals


def request_readings(records: list[RequestRecord], interval: float) -> dict[str, Any]:
    """Rate, failures by type and latency of the requests answered in one interval."""
    failures: dict[str, int] = {}
    for record in records:
        if is_failure(record):
            failures[error_type(record)] = failures.get(error_type(record), 0) + 1
    latency = analysis.percentiles(r.ms for r in records)
    return {
        "count": len(records),
        "rate": round(len(records) / interval, 2) if interval > 0 else None,
        "failures": failures,
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
    }


class Watcher:
    """Samples every ``interval`` seconds in a thread into ``path`` and :attr:`series`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        target: ServiceTarget,
        services: Callable[[], dict[int, str]],
        records: list[RequestRecord],
        path: Path,
        interval: float,
    ) -> None:
        self.data_dir = data_dir
        self.target = target
        self.services = services
        self.records = records
        self.path = path
        self.interval = interval
        self.series: dict[str, Series] = {}
        self.samples: list[dict[str, Any]] = []
        self.limits: dict[str, dict[str, int]] = {}
        self._seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="soak-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        last = time.time()
        with self.path.open("a") as handle:
            while True:
                now = time.time()
                try:
                    sample = self.sample(now, now - last)
                except Exception as error:  # a bad sample must not end the soak's watch
                    sample = {"t": now, "error": f"{type(error).__name__}: {error}"}
                last = now
                handle.write(json.dumps(sample, default=str) + "\n")
                handle.flush()
                self.samples.append(sample)
                if self._stop.wait(self.interval):
                    return

    def sample(self, now: float, elapsed: float) -> dict[str, Any]:
        state = require_state(self.data_dir)
        local = state.driver == "local"
        processes = scan_processes(
            self.data_dir.absolute() if local else None, state.nodes, self.services()
        )
        nodes = asyncio.run(read_nodes(state, limits=not self.limits))
        for name, reading in nodes.items():
            if "limits" in reading:
                self.limits[name] = reading.pop("limits")
        texts = self._metrics_texts()
        fresh = self.records[self._seen :]
        self._seen += len(fresh)
        sample = {
            "t": now,
            "interval": round(elapsed, 3),
            "processes": [asdict(p) for p in processes],
            "nodes": nodes,
            "service": service_readings(texts),
            "requests": request_readings(fresh, elapsed),
        }
        self._record_series(now, processes, nodes)
        return sample

    def _metrics_texts(self) -> list[str]:
        """Every instance that answers: one the soak crashed must not blank the others."""
        if not isinstance(self.target, LocalInstances):
            with contextlib.suppress(httpx.HTTPError):
                return self.target.metrics_texts()
            return []
        texts = []
        for _, record in self.target.records:
            with contextlib.suppress(httpx.HTTPError):
                texts.append(httpx.get(f"{record.ops_url}/metrics", timeout=5).text)
        return texts

    def _add(self, name: str, group: str, t: float, value: float | None) -> None:
        self.series.setdefault(name, Series(name=name, group=group)).add(t, value)

    def _record_series(
        self, t: float, processes: list[ProcessSample], nodes: dict[str, dict[str, Any]]
    ) -> None:
        for p in processes:
            key = f"{p.owner} {p.role} pid {p.pid}"
            self._add(f"{key} RSS", f"{p.role} RSS", t, p.rss_bytes)
            self._add(f"{key} PSS", f"{p.role} PSS", t, p.pss_bytes)
            self._add(f"{key} descriptors", f"{p.role} descriptors", t, p.fds)
        answered = {name: r for name, r in nodes.items() if "error" not in r}
        for name, reading in answered.items():
            self._add(f"{name} WAL on disk", "WAL on disk", t, reading["wal_bytes"])
            for kind in ("client_backends", "service_connections"):
                label = kind.replace("_", " ")
                self._add(f"{name} {label}", f"{label} per node", t, reading[kind])
        # The service's connections move with the primary at every failover; what must not
        # grow is their number over the whole cluster (only counted when every node answered).
        if len(answered) == len(nodes):
            for kind in ("client_backends", "service_connections"):
                label = kind.replace("_", " ")
                total = sum(reading[kind] for reading in answered.values())
                self._add(f"cluster {label}", label, t, total)
