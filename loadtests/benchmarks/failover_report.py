"""The failover benchmark's one report shape, whatever the target, fault or measure: a line
per round as it ends, then medians per kind of round and the ratios between targets, and the
same in ``failover.json`` (rewritten after every round, so a run stopped half-way keeps what it
measured)."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.benchmarks.failover_options import Measure, Plan, Step

WINDOW_ENDS = {
    Measure.UPLOAD: "first acked upload",
    Measure.WRITE: "first write",
    Measure.PHASES: "first acked upload",
}


@dataclass(frozen=True)
class RoundResult:
    """One round: the window, who led before and after, and what the measure adds (seconds
    of each phase, of the fault and failover commands, of a switchover)."""

    window: float | None  # from the fault done to the window's end (see Measure); None: unseen
    old_leader: str
    new_leader: str
    acknowledged: int | None = None  # uploads acknowledged during the round (upload, phases)
    lost: int | None = None  # of those, how many the new primary does not return
    extra: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    round: int
    step: Step
    load: float  # 1-minute load average as the round began: the machine has 2 shared cores
    result: RoundResult


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _extras(extra: dict[str, float | None]) -> str:
    return "".join(f"  {name} {_seconds(value)}" for name, value in extra.items())


@dataclass
class FailoverReport:
    plan: Plan
    out: Path
    log: Callable[[str], None] = print
    rounds: list[Recorded] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))

    def kind(self, step: Step) -> str:
        """The kind of round a line or median is about: target, fault, and the way it was
        issued when the run alternates ways."""
        way = f" ({step.via.value})" if len(self.plan.vias) > 1 else ""
        return f"{step.target.value} {step.fault.value}{way}"

    def label(self, step: Step) -> str:
        """:meth:`kind` in columns, for the printed lines."""
        way = f" ({step.via.value})" if len(self.plan.vias) > 1 else ""
        return f"{step.target.value:10s} {step.fault.value:9s}{way}"

    def add(self, number: int, step: Step, result: RoundResult) -> None:
        self.rounds.append(Recorded(number, step, os.getloadavg()[0], result))
        counted = (
            f"; {result.acknowledged} acked, {result.lost} lost"
            if result.acknowledged is not None
            else ""
        )
        self.log(
            f"round {number} {self.label(step)} fault -> {WINDOW_ENDS[self.plan.measure]} "
            f"{_seconds(result.window):>6} s  (leader {result.old_leader} -> "
            f"{result.new_leader}{counted}; load {self.rounds[-1].load:.1f})"
            + _extras(result.extra)
        )
        self.write()

    def medians(self) -> dict[str, dict[str, Any]]:
        """Per kind of round: median, min and max window, lost uploads, and the median of
        each extra."""
        by_kind: dict[str, list[Recorded]] = {}
        labels: dict[str, str] = {}
        for recorded in self.rounds:
            by_kind.setdefault(self.kind(recorded.step), []).append(recorded)
            labels[self.kind(recorded.step)] = self.label(recorded.step)
        summary: dict[str, dict[str, Any]] = {}
        for kind, rounds in by_kind.items():
            windows = [w for r in rounds if (w := r.result.window) is not None]
            extras = {name: None for r in rounds for name in r.result.extra}
            counted = [lost for r in rounds if (lost := r.result.lost) is not None]
            summary[kind] = {
                "label": labels[kind],
                "target": rounds[0].step.target.value,
                "fault": rounds[0].step.fault.value,
                "window": _median(list(windows)),
                "min": min(windows, default=None),
                "max": max(windows, default=None),
                "lost": sum(counted) if counted else None,
                "extra": {
                    name: _median([r.result.extra.get(name) for r in rounds]) for name in extras
                },
            }
        return summary

    def ratios(self, medians: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Each other target's median window over the first target's, fault by fault (the
        same fault, issued the same way)."""
        first = self.plan.targets[0].value
        found: dict[str, float] = {}
        for entry in medians.values():
            if entry["target"] == first:
                continue
            for reference in medians.values():
                if (
                    reference["target"] == first
                    and reference["fault"] == entry["fault"]
                    and entry["window"] is not None
                    and reference["window"]
                ):
                    name = f"{entry['target']} / {first} ({entry['fault']})"
                    found[name] = round(entry["window"] / reference["window"], 2)
                    break
        return found

    def finish(self) -> None:
        medians = self.medians()
        for entry in medians.values():
            lost = "" if entry["lost"] is None else f"; lost {entry['lost']}"
            self.log(
                f"median {entry['label']} {_seconds(entry['window']):>6} s  "
                f"(min {_seconds(entry['min'])}, max {_seconds(entry['max'])}{lost})"
                + _extras(entry["extra"])
            )
        for name, ratio in self.ratios(medians).items():
            self.log(f"{name} {ratio:.2f}")
        self.write()
        self.log(f"results in {self.out}")

    def write(self) -> None:
        plan = {**asdict(self.plan), "results_dir": str(self.plan.results_dir)}
        medians = self.medians()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(
            json.dumps(
                {
                    "started_at": self.started_at,
                    "plan": plan,
                    "window_ends_at": WINDOW_ENDS[self.plan.measure],
                    "rounds": [
                        {
                            "round": r.round,
                            **asdict(r.step),
                            "load": r.load,
                            **asdict(r.result),
                        }
                        for r in self.rounds
                    ],
                    "medians": medians,
                    "ratios": self.ratios(medians),
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
