"""PNG plots of experiment results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def throughput_plot(
    path: Path, series: list[dict[str, Any]], marks: dict[str, float], title: str
) -> None:
    """Requests, errors and acknowledged writes per second, with events marked."""
    seconds = [point["second"] for point in series]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    axis.plot(seconds, [p["requests"] for p in series], label="requests/s")
    axis.plot(seconds, [p["writes_ok"] for p in series], label="acknowledged writes/s")
    axis.plot(seconds, [p["errors"] for p in series], label="errors/s", color="tab:red")
    for label, at in _merge_close(marks, span=max(seconds, default=1) or 1).items():
        axis.axvline(at, linestyle="--", color="gray")
        axis.annotate(
            label, (at, axis.get_ylim()[1] * 0.95), rotation=90, fontsize=8, ha="right", va="top"
        )
    axis.set_xlabel("seconds since start")
    axis.set_ylabel("per second")
    axis.set_title(title)
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _merge_close(marks: dict[str, float], span: float) -> dict[str, float]:
    """One line for marks closer than 1 % of the axis (their labels would overprint)."""
    merged: dict[str, float] = {}
    for label, at in sorted(marks.items(), key=lambda item: item[1]):
        last = next(reversed(merged), None)
        if last is not None and at - merged[last] < span / 100:
            merged[f"{last}, {label}"] = merged.pop(last)
        else:
            merged[label] = at
    return merged


def window_split_plot(path: Path, phases: dict[str, float | None], title: str) -> None:
    """The write window as one bar split into its phases, each labelled with its seconds."""
    figure, axis = plt.subplots(figsize=(10, 2.6))
    left = 0.0
    for (name, seconds), colour in zip(
        phases.items(), ("tab:red", "tab:orange", "tab:blue", "tab:green"), strict=False
    ):
        width = seconds or 0.0
        axis.barh([0], [width], left=left, color=colour, label=f"{name.replace('_', ' ')}")
        if width > 0:
            axis.annotate(
                f"{width:.2f} s", (left + width / 2, 0), ha="center", va="center", fontsize=8
            )
        left += width
    axis.set_yticks([])
    axis.set_xlabel("seconds after the fault (first acknowledged upload at the right end)")
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=4, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def lag_plot(
    path: Path, samples: list[dict[str, Any]], start: float, marks: dict[str, float], title: str
) -> None:
    """Each replica's lag in seconds and bytes over time, as the router measured it."""
    figure, (seconds_axis, bytes_axis) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    names = sorted(
        {
            node["name"]
            for sample in samples
            for node in sample["nodes"]
            if node["role"] == "replica"
        }
    )
    for name in names:
        points = [
            (s["t"] - start, node)
            for s in samples
            for node in s["nodes"]
            if node["name"] == name and node["role"] == "replica"
        ]
        seconds_axis.plot(
            [t for t, _ in points],
            [n["lag_seconds"] or 0 for _, n in points],
            label=name,
            marker=".",
            linewidth=1,
        )
        bytes_axis.plot(
            [t for t, _ in points],
            [n["lag_bytes"] or 0 for _, n in points],
            label=name,
            marker=".",
            linewidth=1,
        )
    for axis in (seconds_axis, bytes_axis):
        for at in marks.values():
            axis.axvline(at, linestyle="--", color="gray")
    for label, at in marks.items():
        seconds_axis.annotate(label, (at, 0), rotation=90, fontsize=7, ha="right", va="bottom")
    seconds_axis.set_ylabel("lag (s)")
    bytes_axis.set_ylabel("lag (bytes)")
    bytes_axis.set_xlabel("seconds since start")
    seconds_axis.set_title(title)
    if names:
        seconds_axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def stale_rate_plot(path: Path, cells: list[dict[str, Any]]) -> None:
    """Stale-read rate per (apply delay, consistency) cell, grouped by delay."""
    delays = list(dict.fromkeys(cell["apply_delay"] for cell in cells))
    modes = list(dict.fromkeys(cell["consistency"] for cell in cells))
    width = 0.8 / max(1, len(modes))
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for index, mode in enumerate(modes):
        rates = [
            next(
                (
                    c["stale_rate"] or 0.0
                    for c in cells
                    if c["apply_delay"] == delay and c["consistency"] == mode
                ),
                0.0,
            )
            for delay in delays
        ]
        positions = [d + index * width for d in range(len(delays))]
        bars = axis.bar(positions, [rate * 100 for rate in rates], width, label=mode)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks([d + width * (len(modes) - 1) / 2 for d in range(len(delays))], delays)
    axis.set_xlabel("replica apply delay")
    axis.set_ylabel("stale reads (% of read-after-upload)")
    axis.set_title("Stale reads by consistency mode")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


ANOMALY_KINDS = (
    ("ryw_violations", "read-your-writes"),
    ("seen_then_404", "seen → 404"),
    ("listing_lost_row", "listing lost a row"),
    ("deleted_seen_again", "deleted seen again"),
    ("lost_writes", "writes lost"),
)


def consistency_plot(path: Path, modes: list[dict[str, Any]]) -> None:
    """Anomalies by kind per mode (left) beside each mode's cost (right)."""
    names = [m["mode"] for m in modes]
    figure, (anomaly_axis, cost_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(ANOMALY_KINDS)
    for index, (key, label) in enumerate(ANOMALY_KINDS):
        positions = [m + index * width for m in range(len(names))]
        bars = anomaly_axis.bar(positions, [m["anomalies"][key] for m in modes], width, label=label)
        anomaly_axis.bar_label(bars, fontsize=7)
    anomaly_axis.set_xticks(
        [m + width * (len(ANOMALY_KINDS) - 1) / 2 for m in range(len(names))], names
    )
    anomaly_axis.set_yscale("symlog")  # a single anomaly must not vanish beside a thousand
    anomaly_axis.set_ylim(bottom=0)
    anomaly_axis.set_ylabel("anomalies (symmetric log scale)")
    anomaly_axis.set_title("Anomalies the checker found")
    anomaly_axis.legend(fontsize=8)
    shares = [100 * (m["cost"]["primary_share"] or 0) for m in modes]
    bars = cost_axis.bar(names, shares, color="tab:gray", label="reads on the primary (%)")
    cost_axis.bar_label(bars, fmt="%.0f", fontsize=8)
    cost_axis.set_ylabel("reads on the primary (%)")
    p95_axis = cost_axis.twinx()
    p95_axis.plot(
        names,
        [m["cost"]["read_latency_ms"]["p95"] or 0 for m in modes],
        color="tab:red",
        marker="o",
        label="read p95 (ms)",
    )
    p95_axis.set_ylabel("read p95 (ms)")
    p95_axis.set_ylim(bottom=0)
    p95_axis.legend(loc="upper left", fontsize=8)
    cost_axis.set_title("What each mode costs")
    for axis in (anomaly_axis, cost_axis):
        axis.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def soak_timeline_plot(
    path: Path, samples: list[dict[str, Any]], faults: list[dict[str, Any]], title: str
) -> None:
    """The soak on one time axis: faults as shaded bands over requests and failures per
    second, p99 latency, each replica's lag and the memory of each service instance and node.

    ``samples`` are the watcher's lines with ``t`` already in seconds since the start;
    ``faults`` the fault log (``started``/``ended`` in the same seconds)."""
    good = [s for s in samples if "requests" in s]
    t = [s["t"] for s in good]
    figure, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    rate_axis, p99_axis, lag_axis, memory_axis = axes
    rate_axis.plot(t, [s["requests"]["rate"] or 0 for s in good], label="requests/s")
    rate_axis.plot(
        t,
        [sum(s["requests"]["failures"].values()) / max(1e-9, s.get("interval", 1)) for s in good],
        label="failures/s",
        color="tab:red",
    )
    rate_axis.set_ylabel("per second")
    p99_axis.plot(t, [s["requests"]["p99_ms"] or 0 for s in good], color="tab:purple")
    p99_axis.set_ylabel("p99 latency (ms)")
    names = sorted({name for s in good for name in s["nodes"]})
    for name in names:
        lag_axis.plot(
            t,
            [
                (s["nodes"][name].get("lag_seconds") or 0)
                if s["nodes"].get(name, {}).get("role") == "replica"
                else float("nan")
                for s in good
            ],
            label=name,
            marker=".",
            linewidth=1,
        )
    lag_axis.set_ylabel("replica lag (s)")
    owners = sorted({(p["role"], p["owner"]) for s in good for p in s["processes"]})
    for role, owner in owners:
        if role not in ("service", "postmaster"):
            continue
        key = "rss_bytes" if role == "service" else "pss_bytes"
        members = ("service",) if role == "service" else ("postmaster", "postgres")
        memory_axis.plot(
            t,
            [
                sum(
                    (p[key] or 0)
                    for p in s["processes"]
                    if p["owner"] == owner and p["role"] in members
                )
                / 2**20
                for s in good
            ],
            label=f"{owner} {'RSS' if role == 'service' else 'PostgreSQL PSS'}",
        )
    memory_axis.set_ylabel("memory (MiB)")
    memory_axis.set_xlabel("seconds since the load started")
    end = max(t, default=0)
    for fault in faults:
        if fault.get("started") is None:
            continue
        stop = fault.get("ended") if fault.get("ended") is not None else end
        colour = "tab:red" if fault.get("error") else "tab:orange"
        for axis in axes:
            axis.axvspan(fault["started"], stop, color=colour, alpha=0.15, linewidth=0)
        rate_axis.annotate(
            f"{fault['kind']} {fault.get('target') or ''}",
            (fault["started"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
        )
    for axis in axes:
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper right", fontsize=7)
    rate_axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def overload_plot(path: Path, steps: list[dict[str, Any]], sustainable: float, title: str) -> None:
    """Goodput (and what was sent) against offered load, p99 on a second axis."""
    offered = [s["offered_per_second"] for s in steps]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.plot(offered, offered, linestyle=":", color="gray", label="offered")
    axis.plot(offered, [s["sent_per_second"] for s in steps], marker=".", label="sent/s")
    axis.plot(
        offered, [s["goodput_per_second"] for s in steps], marker="o", label="goodput (2xx/s)"
    )
    axis.axhline(sustainable, linestyle="--", color="tab:green", label="closed-loop goodput")
    axis.set_xlabel("offered requests/s")
    axis.set_ylabel("requests/s")
    latency = axis.twinx()
    latency.plot(offered, [s["p99_ms"] for s in steps], marker="s", color="tab:red", label="p99 ms")
    latency.set_ylabel("p99 latency (ms)")
    lines = axis.get_legend_handles_labels()
    more = latency.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def restore_timeline_plot(
    path: Path,
    *,
    acked: list[tuple[float, bool]],
    marks: dict[str, float],
    restore: tuple[float, float],
    title: str,
) -> None:
    """Acknowledged uploads per half second, split into those the restore brought back and
    those it did not, with the backup, the mistake and the restore target marked and the
    restore's duration shaded (seconds since the experiment started)."""
    bucket = 0.5
    end = max([restore[1], *(at for at, _ in acked)], default=1.0)
    edges = [i * bucket for i in range(int(end / bucket) + 2)]
    back = [0] * len(edges)
    absent = [0] * len(edges)
    for at, came_back in acked:
        (back if came_back else absent)[int(at / bucket)] += 1
    figure, axis = plt.subplots(figsize=(10, 4.5))
    axis.bar(edges, back, width=bucket, align="edge", color="tab:green", label="came back")
    axis.bar(
        edges, absent, width=bucket, align="edge", bottom=back, color="tab:red", label="absent"
    )
    axis.axvspan(*restore, color="tab:blue", alpha=0.15, label="restore (new cluster)")
    axis.annotate(
        f"restore {restore[1] - restore[0]:.1f} s",
        ((restore[0] + restore[1]) / 2, 0.5),
        xycoords=("data", "axes fraction"),
        ha="center",
        fontsize=8,
    )
    for label, at in _merge_close(marks, span=end).items():
        axis.axvline(at, linestyle="--", color="gray")
        axis.annotate(
            label, (at, 0.98), xycoords=("data", "axes fraction"), rotation=90, fontsize=8,
            ha="right", va="top",
        )  # fmt: skip
    axis.set_xlabel("seconds since start (upload acknowledged at)")
    axis.set_ylabel(f"acknowledged uploads per {bucket} s")
    axis.set_title(title)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
