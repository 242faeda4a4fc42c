"""Load profiles as data; step.py and spike.py wrap them as Locust shapes."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until: float  # seconds from the start
    users: int
    spawn_rate: float


def step_stages(peak: int, stages: int, stage_seconds: float) -> list[Stage]:
    """Add peak/stages users every stage_seconds, then hold one more stage at the peak."""
    step = max(1, peak // stages)
    return [
        Stage(stage_seconds * (i + 1), min(peak, step * (i + 1)), float(step))
        for i in range(stages)
    ] + [Stage(stage_seconds * (stages + 1), peak, float(step))]


def spike_stages(base: int, peak: int, seconds: float) -> list[Stage]:
    """Base load, a sudden spike in the middle third, then base again."""
    third = seconds / 3
    return [
        Stage(third, base, float(base)),
        Stage(2 * third, peak, float(peak)),
        Stage(seconds, base, float(peak)),
    ]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def tick(stages: list[Stage], run_time: float) -> tuple[int, float] | None:
    for stage in stages:
        if run_time < stage.until:
            return stage.users, stage.spawn_rate
    return None
