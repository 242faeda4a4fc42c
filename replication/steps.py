"""Timestamps of each step of a cluster operation, for the human summary and --json."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class StepClock:
    command: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _start: float = field(default_factory=time.monotonic)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, **details: Any) -> None:
        """Record that ``name`` just finished."""
        self.steps.append(
            {
                "step": name,
                "at": datetime.now(UTC).isoformat(),
                "elapsed_seconds": round(self.elapsed, 3),
                **details,
            }
        )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def since_start(self, moment: float) -> float:
        """Seconds from the start to ``moment`` (a time.monotonic() value)."""
        return round(moment - self._start, 3)

    def to_json(self, **result: Any) -> dict[str, Any]:
        return {
            "command": self.command,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.elapsed, 3),
            **result,
            "steps": self.steps,
        }
