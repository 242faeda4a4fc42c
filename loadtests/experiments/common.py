"""What every experiment does: a results folder, service instances, Locust runs, samplers of
the router's view, and cleanup of all of it (also on Ctrl-C or failure)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from replication.cluster import Cluster, cluster_down, service_urls
from replication.ports import find_free_port_range
from replication.service_process import ServiceRecord, start_service, stop_service

LOADTESTS = Path(__file__).resolve().parent.parent
LOCUSTFILE = LOADTESTS / "locustfile.py"
SCENARIO_CLASSES = {
    "browse": "BrowseUser",
    "upload": "UploadUser",
    "mixed": "MixedUser",
    "ryw": "RywUser",
}


@contextlib.contextmanager
def cluster_for_experiment(data_dir: Path) -> Iterator[None]:
    """Stop the cluster afterwards when the experiment is what started it."""
    was_running = False
    if (data_dir / "state.json").exists():
        with contextlib.suppress(Exception):
            existing = Cluster.open(data_dir)
            was_running = existing.driver.is_running(existing.state.primary_node)
    try:
        yield
    finally:
        if not was_running:
            with contextlib.suppress(Exception):
                cluster_down(data_dir)


def results_dir(base: Path, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = base / f"{name}-{stamp}"
    path.mkdir(parents=True, exist_ok=False)
    return path


@dataclass
class LocustRun:
    process: subprocess.Popen[bytes]
    log: Path
    prefix: Path


@dataclass
class Experiment:
    """Owns everything an experiment starts; ``close()`` stops it all."""

    cluster: Cluster
    out: Path
    services: list[tuple[Path, ServiceRecord]] = field(default_factory=list)
    locusts: list[LocustRun] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    _scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="replikit-exp-")))
    _stop_sampling: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def start_services(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        env = {
            **service_urls(self.cluster.state),
            "REPLIKIT_UPLOAD_RATE_LIMIT": "0",
            "REPLIKIT_HEALTH_INTERVAL": "0.5",
            **(extra_env or {}),
        }
        for index in range(count):
            port = find_free_port_range(1, start=41000 + 50 * index)
            record_dir = self._scratch / f"service-{index}"
            record = start_service(record_dir, host="127.0.0.1", port=port, workers=1, env=env)
            self.services.append((record_dir, record))

    @property
    def urls(self) -> list[str]:
        return [record.url for _, record in self.services]

    def start_locust(
        self,
        *,
        url: str,
        label: str,
        users: int,
        seconds: float,
        tags: list[str],
        env: dict[str, str] | None = None,
    ) -> LocustRun:
        prefix = self.out / f"locust-{label}"
        log = self.out / f"requests-{label}.jsonl"
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--host",
            url,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(max(1, users)),
            "-t",
            f"{max(1, round(seconds))}s",
            "--csv",
            str(prefix),
            "--csv-full-history",
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
            # Name the user classes: with --tags alone Locust also spawns users whose every
            # task was filtered out, and they fail.
            *(SCENARIO_CLASSES[tag] for tag in tags),
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=(self.out / f"locust-{label}.log").open("w"),
            env={**os.environ, "REPLIKIT_REQUEST_LOG": str(log), **(env or {})},
            start_new_session=True,
        )
        run = LocustRun(process, log, prefix)
        self.locusts.append(run)
        return run

    def wait_locusts(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for run in self.locusts:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(max(1.0, deadline - time.monotonic()))

    def start_sampling(self, interval: float = 0.5) -> None:
        """Record the router's view of every node (role, lag) from the first instance."""

        def sample() -> None:
            with httpx.Client(base_url=self.urls[0], timeout=2) as client:
                while not self._stop_sampling.is_set():
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        view = client.get("/cluster").json()
                        self.samples.append(
                            {"t": time.time(), "writer": view["writer"], "nodes": view["nodes"]}
                        )
                    self._stop_sampling.wait(interval)

        self._sampler = threading.Thread(target=sample, name="cluster-sampler", daemon=True)
        self._sampler.start()

    def metrics_text(self) -> str:
        return "\n".join(httpx.get(f"{url}/metrics", timeout=5).text for url in self.urls)

    def close(self) -> None:
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        for run in self.locusts:
            if run.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.process.wait(10)
                if run.process.poll() is None:
                    os.killpg(run.process.pid, signal.SIGKILL)
        for record_dir, _ in self.services:
            with contextlib.suppress(Exception):
                stop_service(record_dir)
        self.services.clear()
        (self.out / "cluster-samples.json").write_text(json.dumps(self.samples))
        shutil.rmtree(self._scratch, ignore_errors=True)


@contextlib.contextmanager
def experiment(cluster: Cluster, out: Path) -> Iterator[Experiment]:
    run = Experiment(cluster=cluster, out=out)
    try:
        yield run
    finally:
        run.close()


def read_requests(runs: list[LocustRun]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for run in runs:
        if run.log.exists():
            records += [json.loads(line) for line in run.log.read_text().splitlines() if line]
    return sorted(records, key=lambda r: r["t"])


def progress(description: str, seconds: float) -> Iterator[float]:
    """Yield elapsed seconds every 0.25 s while drawing a progress bar (rich)."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(description, total=seconds)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            bar.update(task, completed=elapsed)
            yield elapsed
            time.sleep(0.25)
        bar.update(task, completed=seconds)
