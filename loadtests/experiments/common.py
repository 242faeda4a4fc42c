"""What every experiment does: a results folder, a service target (instances of its own, or a
compose stack's load balancer), Locust runs, samplers of the router's view, and cleanup of all
of it (also on Ctrl-C or failure)."""

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

from loadtests.experiments.targets import ServiceTarget, target_for
from replication.cluster import Cluster, cluster_down

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
    """Stop the cluster afterwards when the experiment is what started it.

    A compose cluster is never stopped: its stack (load balancer, service instances) belongs to
    compose, and stopping only its database containers would leave it half down."""
    was_running = False
    if (data_dir / "state.json").exists():
        with contextlib.suppress(Exception):
            existing = Cluster.open(data_dir)
            was_running = existing.state.driver == "compose" or existing.driver.is_running(
                existing.state.primary_node
            )
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
    target: ServiceTarget | None = None
    locusts: list[LocustRun] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    _scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="replikit-exp-")))
    _stop_sampling: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def start_services(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        """Choose the service target: ``count`` instances of our own for a local cluster, the
        recorded load balancer for a compose one (``count`` and ``extra_env`` do not apply)."""
        self.target = target_for(self.cluster, self._scratch, count, extra_env)

    @property
    def service(self) -> ServiceTarget:
        if self.target is None:
            raise RuntimeError("start_services() first")
        return self.target

    @property
    def urls(self) -> list[str]:
        """Where the load goes: one Locust process per URL."""
        return self.service.load_urls

    def describe_service(self) -> dict[str, Any]:
        """The target, for summary.json: its kind, load URLs and how many instances answered."""
        return {
            "kind": self.service.kind,
            "load_urls": self.urls,
            "instances": len(self.service.metrics_texts()),
        }

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
            with httpx.Client(base_url=self.service.view_url, timeout=2) as client:
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
        """Every instance's /metrics, concatenated: counters summed per name give totals."""
        return "\n".join(self.service.metrics_texts())

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
        if self.target is not None:
            self.target.close()
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
