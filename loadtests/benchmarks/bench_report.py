"""Turn the bench's per-round samples into medians and ratios, and into a Markdown report."""

from __future__ import annotations

import statistics
from typing import Any

# Every configuration's throughput entry carries these, per workload (the smoke test checks).
THROUGHPUT_FIELDS = (
    "ok_per_second",
    "p50_ms",
    "p99_ms",
    "failed",
    "vs_pinned",
    "vs_baseline",
    "rounds",
)


def _ratio(value: float, reference: float | None) -> float | None:
    return round(value / reference, 3) if reference else None


# Suffix of the configurations run with two worker processes; their "x baseline" is against
# the bare app with two workers too, so it stays a per-worker comparison.
TWO_WORKERS = ", 2 workers"


def summarize(
    samples: dict[str, dict[str, list[dict[str, float]]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians over the rounds, then each configuration's req/s against pinned and baseline
    (of the same workload)."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for name, workloads in samples.items():
        for workload, rounds in workloads.items():
            summary.setdefault(name, {})[workload] = {
                "ok_per_second": round(statistics.median(r["ok_per_second"] for r in rounds), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 3),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds), 3),
                "failed": int(sum(r["failed"] for r in rounds)),
                "rounds": rounds,
            }
    for name, summarized in summary.items():
        reference = "baseline" + TWO_WORKERS if name.endswith(TWO_WORKERS) else "baseline"
        for workload, entry in summarized.items():
            pinned = summary.get("pinned", {}).get(workload, {}).get("ok_per_second")
            baseline = summary.get(reference, {}).get(workload, {}).get("ok_per_second")
            entry["vs_pinned"] = _ratio(entry["ok_per_second"], pinned)
            entry["vs_baseline"] = _ratio(entry["ok_per_second"], baseline)
    return summary


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def throughput_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | workload | req/s | p50 ms | p99 ms | failed | x pinned | x baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, workloads in result["throughput"].items():
        for workload, entry in workloads.items():
            lines.append(
                f"| {name} | {workload} | {entry['ok_per_second']:,.0f} | "
                f"{_fmt(entry['p50_ms'])} | {_fmt(entry['p99_ms'])} | {entry['failed']} | "
                f"{_fmt(entry['vs_pinned'])} | {_fmt(entry['vs_baseline'])} |"
            )
    return lines


def memory_table(result: dict[str, Any]) -> list[str]:
    """The last round's RSS: the server process, its helpers (the service's decode fork
    server and workers, multiprocessing's resource tracker) and, for pgpool, pgpool's own
    processes (one per pooled client plus its workers)."""
    lines = [
        "| configuration | server process RSS MiB | helpers (count, RSS MiB) | "
        "pgpool (count, RSS MiB) | total RSS MiB | total PSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in result["memory"].items():
        if not rounds or not rounds[-1]:
            continue
        server, *others = rounds[-1]
        pgpool = [p for p in others if p["program"].startswith("pgpool")]
        helpers = [p for p in others if not p["program"].startswith("pgpool")]
        total = sum(p["rss_mib"] for p in rounds[-1])
        pss = sum(p.get("pss_mib", 0.0) for p in rounds[-1])
        lines.append(
            f"| {name} | {server['rss_mib']:.1f} | "
            f"{len(helpers)}, {sum(p['rss_mib'] for p in helpers):.1f} | "
            f"{len(pgpool)}, {sum(p['rss_mib'] for p in pgpool):.1f} | {total:.1f} | "
            f"{pss:.1f} |"
        )
    return lines


def stale_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | reads | stale (404) | rate | other errors | read p50 ms | read max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["stale_reads"].items():
        lines.append(
            f"| {name} | {entry['reads']} | {entry['stale']} | {_fmt(entry['stale_rate'], 3)} | "
            f"{entry['errors']} | {_fmt(entry['read_p50_ms'])} | {_fmt(entry['read_max_ms'])} |"
        )
    return lines


def kill_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | writes (failed) | reads (failed) | write gap s | failover s | "
        "writes after failover | reads ok after failover |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["primary_kill"].items():
        gap = "no write after the kill" if entry["write_gap_s"] is None else entry["write_gap_s"]
        lines.append(
            f"| {name} | {entry['writes']} ({entry['write_errors']}) | "
            f"{entry['reads']} ({entry['read_errors']}) | {gap} | {entry['failover_s']} | "
            f"{entry['writes_after_failover']} | {entry['reads_ok_after_failover']} |"
        )
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    options = result["options"]
    machine = result["machine"]
    header = [
        f"# Bench {result['started_at']}",
        "",
        f"{machine['cpus']} x {machine['cpu']}, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}. "
        f"{options['rounds']} rounds x {options['seconds']:g} s per workload, "
        f"{options['connections']} connections, {result['load_generator']}; "
        f"medians over the rounds; whole run {result['duration_s']} s. 1-minute load "
        f"average as each round began: {', '.join(map(str, result['load_average_per_round']))}.",
        "",
        "## Throughput",
        "",
    ]
    sections = [
        *header,
        *throughput_table(result),
        "",
        "## Memory (last round; PSS shares pages among processes, RSS counts them in each)",
        "",
        *memory_table(result),
        "",
        "## Stale reads under a 1 s replay delay (upload, then read back at once with its token)",
        "",
        *stale_table(result),
        "",
        "## Primary killed mid-run, then `failover`",
        "",
        *kill_table(result),
        "",
    ]
    return "\n".join(sections)
