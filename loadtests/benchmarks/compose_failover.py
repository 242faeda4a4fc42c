"""Failover seen by a client, on local processes and on the compose stack, side by side:
crash of the primary → first acknowledged upload through the service.

    .venv/bin/python -m loadtests.benchmarks.compose_failover --rounds 5

Both clusters run synchronous replication with the upload rate limit off; the local one is
served by one `replikit serve` instance, the compose one by its two `app` instances behind
HAProxy. Each round streams uploads, crashes the primary with `replikit cluster kill primary`
(which returns once the node refuses connections), runs `replikit cluster failover`, and
times from the crash to the sending of the first upload that is then acknowledged; then the
old primary rejoins. Rounds alternate between the two clusters. Prints every round, the
medians, and how many acknowledged uploads were lost (expected: none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.experiments.targets import target_for
from replication.cluster import Cluster
from replication.compose.env import ensure_env_file
from replication.compose.stack import ComposeStack
from replication.ports import find_free_port_range

ROOT = Path(__file__).resolve().parents[2]
REPLIKIT = str(Path(sys.executable).parent / "replikit")


def cli(*args: str) -> str:
    result = subprocess.run([REPLIKIT, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"replikit {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def primary_of(data_dir: Path) -> str:
    status = json.loads(cli("cluster", "status", "--json", "--data-dir", str(data_dir)))
    return str(next(node["name"] for node in status["nodes"] if node["role"] == "primary"))


@contextlib.contextmanager
def local_cluster(scratch: Path) -> Iterator[tuple[Path, str]]:
    data_dir = scratch / "local"
    base = find_free_port_range(3)
    cli("cluster", "up", "--data-dir", str(data_dir), "--sync", "on", "--base-port", str(base))
    target = None
    try:
        cli("migrate", "--data-dir", str(data_dir))
        target = target_for(Cluster.open(data_dir), scratch, 1)
        yield data_dir, target.load_urls[0]
    finally:
        if target is not None:
            target.close()
        cli("cluster", "down", "--data-dir", str(data_dir))


@contextlib.contextmanager
def compose_cluster(scratch: Path) -> Iterator[tuple[Path, str]]:
    env_file = scratch / "stack.env"
    keys = ["REPLIKIT_HTTP_PORT", "REPLIKIT_ADMIN_PORT"] + [
        f"REPLIKIT_PG{i}_PORT" for i in range(3)
    ]
    base = find_free_port_range(len(keys))
    ensure_env_file(env_file, ports={key: base + i for i, key in enumerate(keys)})
    with env_file.open("a") as extra:
        extra.write("REPLIKIT_SYNC_MODE=on\nREPLIKIT_UPLOAD_RATE_LIMIT=0\n")
    project = f"rkbench{int(time.time())}"
    stack = ComposeStack(root=ROOT, env_file=env_file, project_name=project)
    data_dir = scratch / "compose"
    try:
        stack.up(timeout=240)
        cli(
            "cluster", "attach-compose", "--env-file", str(env_file), "-p", project,
            "--data-dir", str(data_dir),
        )  # fmt: skip
        yield data_dir, f"http://127.0.0.1:{base}"
    finally:
        stack.down(volumes=True)


def one_round(data_dir: Path, url: str) -> tuple[float, int, int]:
    """(window seconds, acknowledged, lost) of one crash and failover, then the rejoin."""
    old = primary_of(data_dir)
    with running(AckedUploads(url)) as stream:
        time.sleep(2)
        cli("cluster", "kill", "primary", "--data-dir", str(data_dir))
        down_at = time.monotonic()
        cli("cluster", "failover", "--data-dir", str(data_dir))
        window = stream.first_ack_sent_after(down_at)
        time.sleep(1)
    lost = len(stream.missing(url))
    cli("cluster", "rejoin", old, "--data-dir", str(data_dir))
    return window, len(stream.acknowledged), lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/var/tmp"))
    scratch.chmod(0o755)
    windows: dict[str, list[float]] = {"local": [], "compose": []}
    lost_total = {"local": 0, "compose": 0}
    try:
        with local_cluster(scratch) as local, compose_cluster(scratch) as compose:
            for index in range(args.rounds):
                for name, (data_dir, url) in (("local", local), ("compose", compose)):
                    window, acked, lost = one_round(data_dir, url)
                    windows[name].append(window)
                    lost_total[name] += lost
                    print(
                        f"round {index + 1} {name:7s} crash -> first acked upload "
                        f"{window:5.2f} s  ({acked} acked, {lost} lost)",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in windows.items()}
    for name, median in medians.items():
        print(f"median {name:7s} {median:.2f} s  (lost {lost_total[name]})")
    print(f"compose / local {medians['compose'] / medians['local']:.2f}")


if __name__ == "__main__":
    main()
