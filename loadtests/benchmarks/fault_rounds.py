"""Rounds of faults, alternating, with a line per round and the medians: the loop shared by
the failover benchmarks whose rounds each answer "fault → first acknowledged upload"."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundResult:
    window: float  # seconds from the fault to the sending of the first acknowledged upload
    old_leader: str
    new_leader: str
    acknowledged: int
    lost: int


def run_rounds(
    rounds: int, faults: Sequence[str], one_round: Callable[[str], RoundResult]
) -> dict[str, list[float]]:
    """Run ``rounds`` rounds of every fault in turn, printing each; then print the medians.
    Returns the windows per fault."""
    windows: dict[str, list[float]] = {fault: [] for fault in faults}
    lost_total = dict.fromkeys(faults, 0)
    for index in range(rounds):
        for fault in faults:
            result = one_round(fault)
            windows[fault].append(result.window)
            lost_total[fault] += result.lost
            print(
                f"round {index + 1} {fault:8s} fault -> first acked upload "
                f"{result.window:6.2f} s  "
                f"(leader {result.old_leader} -> {result.new_leader}; "
                f"{result.acknowledged} acked, {result.lost} lost)",
                flush=True,
            )
    for fault in faults:
        values = windows[fault]
        print(
            f"median {fault:8s} {statistics.median(values):6.2f} s  "
            f"(min {min(values):.2f}, max {max(values):.2f}; lost {lost_total[fault]})"
        )
    return windows
