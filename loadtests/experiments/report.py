"""summary.md: the tables a person reads, from summary.json's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.experiments.consistency_check import PROMISES


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value}{unit}"


def _service(parameters: dict[str, Any]) -> str:
    """What the load went to: instances of the experiment's own, or a load balancer."""
    service = parameters.get("service") or {}
    instances = parameters.get("service_instances", service.get("instances"))
    if service.get("kind") == "compose":
        return (
            f"the compose load balancer {service['load_urls'][0]} ({instances} service instances)"
        )
    return f"{instances} service instances"


PHASE_MEANINGS = {
    "detection": "fault → etcd shows it (leader key gone or moved, or the agent reports its PostgreSQL down)",
    "election": "→ a member holds the leader key",
    "promotion": "→ the database takes writes steadily (promote or restart; sync standby)",
    "router_catch_up": "→ the first upload acknowledged through the service",
}


def _manual_intro(s: dict[str, Any]) -> str:
    p = s["parameters"]
    return f"""# Failover experiment

{p["users"]} users for {p["duration_seconds"]} s against {_service(p)}, sync `{p["sync"]}`; the primary {s["old_primary"]} was crashed at
{p["kill_at_seconds"]} s and `replikit cluster failover` promoted {s["new_primary"]}
(timeline {s["new_timeline"]}).
"""


def _automatic_intro(s: dict[str, Any]) -> str:
    p, split = s["parameters"], s["automatic_failover"]
    what = (
        "lost its node (agent and PostgreSQL)"
        if p["fault"] == "node"
        else "had its PostgreSQL crashed under a live agent"
    )
    rows = "\n".join(
        f"| {name.replace('_', ' ')} | {_fmt(seconds, ' s')} | {PHASE_MEANINGS[name]} |"
        for name, seconds in split["phases"].items()
    )
    observed = ", ".join(
        f"{name.replace('_', ' ')} {_fmt(split['observed'][name], ' s')}"
        for name in split["observed"]
    )
    return f"""# Automatic failover experiment (Patroni)

{p["users"]} users for {p["duration_seconds"]} s against {_service(p)}, sync `{p["sync"]}`; the leader {s["old_primary"]} {what} at
{p["kill_at_seconds"]} s and nobody ran a command. Leader afterwards: {split["new_leader"] or "—"} (timeline {_fmt(s["new_timeline"])}).

| phase | seconds | from the previous milestone |
| --- | --- | --- |
{rows}
| **fault → first acknowledged upload** | **{_fmt(split["window_seconds"], " s")}** | the sum |

As sampled every {_fmt(split["resolution_seconds"], " s")} (seconds after the fault): {observed}. A milestone
seen only after a later one is counted at the later one's time.
"""


def write_failover_report(out: Path, s: dict[str, Any]) -> None:
    latency = s["latency_ms"]
    rows = "\n".join(
        f"| {phase} | {_fmt(latency[phase]['p50'])} | {_fmt(latency[phase]['p95'])} | "
        f"{_fmt(latency[phase]['p99'])} | {latency[phase]['count']} |"
        for phase in ("before", "during", "after")
    )
    automatic = "automatic_failover" in s
    command_row = (
        ""
        if automatic
        else "| failover command: kill → writes accepted | "
        f"{_fmt(s['failover_command']['seconds_to_writable'], ' s')} |\n"
    )
    plots = (
        "Plots: `window_split.png` (the phases above as one bar), `throughput.png` (requests,\n"
        "acknowledged writes and errors per second; kill, detection, election, first database\n"
        "write and first acknowledged upload marked), `replica_lag.png` (each replica's lag as\n"
        "the router measured it)."
        if automatic
        else "Plots: `throughput.png` (requests, acknowledged writes and errors per second; kill, failover and\n"
        "first write marked), `replica_lag.png` (each replica's lag as the router measured it)."
    )
    text = f"""{_automatic_intro(s) if automatic else _manual_intro(s)}
| measure | value |
| --- | --- |
| write unavailability, clients (last 2xx upload before → first after) | {_fmt(s["write_unavailability"]["client_seconds"], " s")} |
| write unavailability, database ({"last heartbeat before the fault → first after" if automatic else "last heartbeat on old timeline → first on new"}) | {_fmt(s["write_unavailability"]["database_seconds"], " s")} |
{command_row}| reads during the window (server errors) | {s["reads_during_window"]["total"]} ({s["reads_during_window"]["server_errors"]}) |
| acknowledged uploads lost | {s["acknowledged_uploads"]["lost"]} of {s["acknowledged_uploads"]["total"]} |
| all requests (server errors) | {s["requests"]["total"]} ({s["requests"]["server_errors"]}) |
| old primary rejoined by | {s["rejoin"]["method"]} |

Latency (ms):

| phase | p50 | p95 | p99 | requests |
| --- | --- | --- | --- | --- |
{rows}

{plots}
"""
    (out / "summary.md").write_text(text)


def write_lag_report(out: Path, s: dict[str, Any]) -> None:
    rows = "\n".join(
        f"| {c['apply_delay']} | {c['consistency']} | {c['ryw_reads']} | {c['stale_reads']} | "
        f"{_fmt(None if c['stale_rate'] is None else round(100 * c['stale_rate'], 2), ' %')} | "
        f"{_fmt(None if c['primary_share'] is None else round(100 * c['primary_share'], 1), ' %')} | "
        f"{int(c['ryw_waits'].get('immediate', 0))}/{int(c['ryw_waits'].get('waited', 0))}/"
        f"{int(c['ryw_waits'].get('timeout', 0))}/{int(c['ryw_waits'].get('skipped', 0))} | "
        f"{_fmt(c['read_latency_ms']['p50'])} | "
        f"{_fmt(c['read_latency_ms']['p95'])} | {_fmt(c['max_replica_lag_seconds'], ' s')} |"
        for c in s["cells"]
    )
    p = s["parameters"]
    text = f"""# Replica-lag experiment

Each cell: every replica's replay delayed by `apply_delay`, then {p["users"]} users
({p["ryw_users"]} uploading and reading back at once, the rest browsing) for
{p["seconds_per_cell"]} s with reads in the given consistency mode, against
{_service(p)}.

| apply delay | consistency | read-after-upload | stale | stale rate | reads on primary | RYW immediate/waited/timeout/skipped | read p50 ms | read p95 ms | max lag |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

A stale read is a read-after-upload that got 404 or other bytes. RYW outcomes count the reads
that carried a token: served by a replica that had already replayed it, served after waiting
for it (at most `REPLIKIT_RYW_WAIT`), sent to the primary after waiting in vain, or sent to the
primary at once because every replica's measured lag exceeded the wait (skipped: no wait). Plots: `stale_reads.png`
(stale rate per cell), `replica_lag.png` (lag over the whole run, cells marked).
"""
    (out / "summary.md").write_text(text)


def _percent(share: float | None) -> str:
    return _fmt(None if share is None else round(100 * share, 1), " %")


RULED_OUT = {"ryw_violations": "RYW", "monotonic_violations": "monotonic reads"}


def write_consistency_report(out: Path, s: dict[str, Any]) -> None:
    rows = []
    for m in s["modes"]:
        a, c = m["anomalies"], m["cost"]
        w = c["token_waits"]
        promised = " + ".join(RULED_OUT[kind] for kind in PROMISES.get(m["mode"], ())) or "—"
        rows.append(
            f"| {m['mode']} | {promised} | **{a['broken_promises']}** | {a['requests']} | "
            f"{a['ryw_violations']} | {a['monotonic_violations']} ({a['seen_then_404']}/"
            f"{a['listing_lost_row']}/{a['deleted_seen_again']}) | "
            f"{a['lost_writes']} of {a['writes_acknowledged']} | "
            f"{_percent(c['primary_share'])} | {w['immediate']}/{w['waited']}/{w['timeout']}/"
            f"{w['skipped']} | {_fmt(c['read_latency_ms']['p50'])} | "
            f"{_fmt(c['read_latency_ms']['p95'])} | {c['server_errors']} |"
        )
    p = s["parameters"]
    delays = ", ".join(f"{node} {delay}" for node, delay in p["apply_delays"].items())
    failover = (
        " The primary was crashed half-way through each mode and a replica promoted."
        if p["failover"]
        else ""
    )
    examples = "\n".join(
        f"- {m['mode']}: {example}" for m in s["modes"] for example in m["anomalies"]["examples"]
    )
    mix = "/".join(f"{p['mix'][op]:g}" for op in ("upload", "delete", "get", "list"))
    text = f"""# Consistency experiment

{p["clients"]} clients ({p["readers"]} of them only reading), each with its own token,
alternating between {_service(p)}, ran {p["seconds_per_mode"]} s per mode: uploads, deletes,
metadata reads and listings (weights {mix}). Replica replay delays: {delays}.{failover}

| mode | rules out | broken | requests | RYW violations | monotonic-read violations (seen→404 / listing lost a row / deleted seen again) | acknowledged writes lost | reads on primary | token waits immediate/waited/timeout/skipped | read p50 ms | read p95 ms | server errors |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

"Broken" counts the anomalies of the kinds the mode rules out; it must be 0. A read-your-writes
violation is a client missing its own acknowledged upload or seeing its own acknowledged delete
undone. Monotonic-read violations: an image the client saw answered 404 later (no delete of it
under way), a listing missing an image the client saw although its key lies inside the page,
an image seen, then gone after its delete, then seen again. `read_your_writes` does not rule
them out: a client that only reads has no token there. Lost writes: acknowledged uploads
missing, or acknowledged deletes undone, on the primary after the mode (no read mode's
promise: `--sync on` is). Token waits count the reads that carried a token in
`read_your_writes` and `monotonic`: served at once, after waiting, after waiting in vain (then
the primary), or on the primary without waiting (every replica lagged longer than the wait).
Every request is in `requests.jsonl`; plots: `consistency.png` (anomalies and cost per mode),
`replica_lag.png`.

First anomalies of each mode:

{examples or "- none"}
"""
    (out / "summary.md").write_text(text)


def _answers(step: dict[str, Any]) -> str:
    """The non-2xx answers of a step by status and code, and wrk's socket errors."""
    parts = [f"{key}: {n}" for key, n in step["errors_by_code"].items()]
    parts += [f"socket {kind}: {n}" for kind, n in step["socket_errors"].items()]
    return ", ".join(parts) or "none"


def write_overload_report(out: Path, s: dict[str, Any]) -> None:
    p, goals, closed = s["parameters"], s["goals"], s["closed_loop"]
    rows = "\n".join(
        f"| {step['multiple']}x | {step['offered_per_second']} | {step['sent_per_second']} | "
        f"**{step['goodput_per_second']}** | {step['p50_ms']} | {step['p99_ms']} | "
        f"{step['shed']} | {_fmt(step['concurrency_limit'])} | {step['false_alarms']} | "
        f"{'yes' if step['nodes_up'] else 'NO'} | {_answers(step)} |"
        for step in s["steps"]
    )
    env = ", ".join(f"`{k}={v}`" for k, v in p["service_env"].items()) or "defaults"
    (out / "summary.md").write_text(
        f"""# Overload experiment

`GET {p["read_path"]}` against {_service(p)} ({env}). Closed loop ({p["closed_loop_seconds"]} s):
**{closed["goodput_per_second"]} 2xx/s** (p50 {closed["p50_ms"]} ms, p99 {closed["p99_ms"]} ms); steps of
{p["step_seconds"]} s offer multiples of {s["base_rate_per_second"]} req/s, open loop (wrk, Poisson arrivals).

| step | offered/s | sent/s | goodput/s | p50 ms | p99 ms | shed | limit | false alarms | nodes up | answers other than 2xx |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Goals (issue 25): goodput at the top step / peak = **{goals["goodput_at_top_over_peak"]}**
(goal >= 0.8: {"met" if goals["goodput_goal_met"] else "NOT met"}); PRIMARY_UNAVAILABLE /
NO_READER_AVAILABLE while every node was up: **{goals["false_alarms_while_nodes_up"]}**; refusals that were
not a 503 with `Retry-After` and a JSON code (or socket errors): **{goals["dishonest_refusals"]}**.
p50/p99 are wrk's, over every answer; with several instances, the highest of their values.

![goodput and p99](overload.png)
"""
    )


def _ids(ids: list[str]) -> str:
    return ", ".join(f"`{i}`" for i in ids[:10]) + (" …" if len(ids) > 10 else "") or "none"


def write_restore_report(out: Path, s: dict[str, Any]) -> None:
    p, m, r, u = s["parameters"], s["mistake"], s["restore"], s["uploads"]
    what = (
        "`DELETE FROM images` as the schema's owner"
        if m["kind"] == "sql"
        else "every image uploaded so far deleted through the API (`DELETE /api/v1/images/{id}`)"
    )
    steps = ", ".join(
        f"{step['step'].replace('_', ' ')} {step['elapsed_seconds']} s" for step in r["steps"]
    )
    kept = (
        f"\nThe restored cluster still runs in {r['data_dir']}: point the service at it with "
        f'`eval "$(replikit cluster env --data-dir {r["data_dir"]})"`; remove it with '
        f"`replikit cluster down --purge --data-dir {r['data_dir']}`.\n"
        if r["kept"]
        else ""
    )
    text = f"""# Restore experiment: **{s["verdict"]}**

{p["clients"]} clients uploaded through {_service(p)} after a full backup ({s["backup"]["label"]},
from {s["backup"]["source"]}). At T = {m["at"]} s ({m["at_time"]}) the mistake: {what}, {m["deleted"]}
images in {m["seconds"]} s ({m["images_left_in_source"]} left in the source at the end, uploaded after it). The
uploads went on for {p["after_seconds"]} s; then `replikit restore --to T` built a new cluster
from backup {r["backup"]} in **{r["seconds"]} s** ({steps}).

| acknowledged uploads | total | back in the restored cluster |
| --- | --- | --- |
| acknowledged before T (each must be back) | {u["before_t"]["total"]} | **{u["before_t"]["back"]}** |
| in flight at T (sent before, acknowledged after: either way) | {u["in_flight_at_t"]["total"]} | {u["in_flight_at_t"]["back"]} |
| sent after T (each must be absent) | {u["after_t"]["total"]} | **{len(u["after_t"]["back"])}** ({u["after_t"]["absent"]} absent) |

- RPO: **{s["rpo_seconds"]} s** (from the oldest upload acknowledged before T that did not come
  back, to T); the newest one that came back was acknowledged {_fmt(u["newest_back_before_t_seconds"], " s")} before T.
- Lost (acknowledged before T, not back): {_ids(u["before_t"]["lost"])}.
- Back although sent after T: {_ids(u["after_t"]["back"])}.
- Uploads that failed (not acknowledged): {s["failed_uploads"]}.

Each upload was read back byte for byte through a service instance started on the restored
cluster. `timeline.png`: acknowledged uploads per half second (came back / absent), the backup,
T and the restore target marked, the restore's duration shaded.
{kept}"""
    (out / "summary.md").write_text(text)
