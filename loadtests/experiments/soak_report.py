"""The soak's files for people: ``summary.md`` (the verdict table), ``watch.csv`` (every
watched series, long format) and ``timeline.png``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from loadtests.experiments import plots
from loadtests.experiments.soak_checks import Series


def write_watch_csv(path: Path, series: dict[str, Series], origin: float) -> None:
    """One row per sample of each series: seconds since the start, series, group, value."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seconds", "series", "group", "value"])
        for one in sorted(series.values(), key=lambda s: s.name):
            for t, value in one.points:
                writer.writerow([round(t - origin, 2), one.name, one.group, value])


def _fault_rows(summary: dict[str, Any]) -> str:
    rows = []
    for f in summary["faults"]:
        steps = ", ".join(f"{k} {v} s" for k, v in f["steps"].items())
        rows.append(
            f"| {f['started']} | {f['kind']} | {f['target'] or '—'} | {f['hold']} | "
            f"{steps or '—'} | {f['whole_at'] if f['whole_at'] is not None else '—'} | "
            f"{f['ended'] if f['ended'] is not None else '—'} | {f['error'] or ''} |"
        )
    return "\n".join(rows) or "| — | no fault was due | | | | | | |"


def render_summary(summary: dict[str, Any]) -> str:
    p = summary["parameters"]
    checks = "\n".join(
        f"| {c['check']} | {'**pass**' if c['passed'] else '**FAIL**'} | {c['number']} |"
        for c in summary["checks"]
    )
    details = "\n".join(
        f"- {c['check']}: {c['detail']}"
        for c in summary["checks"]
        if c["detail"] and not c["passed"]
    )
    errors = summary["errors"]
    inside = ", ".join(f"{k}: {v}" for k, v in sorted(errors["by_type_inside"].items())) or "none"
    latency = summary["requests"]["latency_ms"]
    return f"""# Soak: {summary["verdict"].upper()}

{p["duration_seconds"]:.0f} s of load ({", ".join(p["consistency"])}: {p["clients_per_mode"]}
clients each, {p["readers_per_mode"]} of them only browsing, {p["think_ms"]} ms between
requests) against {p["service"]["instances"]} service instances ({p["service"]["kind"]}) on a
{p["driver"]} cluster managed by {p["manager"]} (sync `{p["sync"]}`), a fault about every
{p["fault_every_seconds"]:.0f} s from seed {p["seed"]}, resources sampled every
{p["sample_every_seconds"]:.0f} s. {summary["requests"]["total"]} requests
({summary["requests"]["per_second"]}/s; p50 {latency["p50"]} ms, p99 {latency["p99"]} ms).

| check | verdict | number |
| --- | --- | --- |
{checks}

{details}

Failures inside fault windows, by type: {inside}.

Faults (seconds since the load started; a window runs from `started` to `ended` = whole
again + {p["settle_seconds"]:.0f} s):

| started | kind | target | hold s | steps (s after start) | whole at | window ends | error |
| --- | --- | --- | --- | --- | --- | --- | --- |
{_fault_rows(summary)}

Growth is judged after a warm-up as long as the run's first third from each series' start
(a fitted least-squares line's rise against its tolerance, see `tolerances` and `growth` in
`summary.json`).
Files: `requests.jsonl` (every request), `watch.jsonl` (every sample), `watch.csv` (every
watched series), `timeline.png`.
"""


def write_soak_report(
    out: Path, summary: dict[str, Any], samples: list[dict[str, Any]], series: dict[str, Series]
) -> None:
    origin = summary["started_at"]
    write_watch_csv(out / "watch.csv", series, origin)
    shifted = [{**s, "t": s["t"] - origin} for s in samples]
    plots.soak_timeline_plot(
        out / "timeline.png",
        shifted,
        summary["faults"],
        f"Soak, {summary['parameters']['duration_seconds']:.0f} s, seed "
        f"{summary['parameters']['seed']}: {summary['verdict']}",
    )
    (out / "summary.md").write_text(render_summary(summary))
