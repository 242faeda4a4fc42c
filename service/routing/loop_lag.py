"""How late this process's event loop runs: the service's own saturation, measured.

A task sleeps ``PERIOD`` seconds again and again and records how much later than asked it woke.
On an idle process that is a millisecond or two; when the process's CPU is saturated (more
requests than it can run, or other processes on the same cores) every wake-up is late by about
as long as the loop takes to get round its ready callbacks. The router reads it to tell a
timeout that this process's own slowness explains from one that says a node stopped answering
(service/routing/failures.py): a probe or a write that timed out while the loop was late is
not evidence against the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

PERIOD = 0.05
# A loop this late (seconds) is saturated enough to explain a timeout: well above scheduling
# noise (1-5 ms on a busy 2-core machine), well below any timeout the service uses.
SATURATED_LATENESS = 0.1
# A loop this late is busy enough that admitting fewer requests at once helps (the adaptive
# limit may shrink): a loop with more ready work than it gets round to within 20 ms.
BUSY_LATENESS = 0.02
KEEP_SECONDS = 30.0


class LoopLag:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (when the wake-up happened, how late it was), oldest first.
        self.samples: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="replikit-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(PERIOD)
            self.record(self.clock(), self.clock() - asked - PERIOD)

    def record(self, now: float, lateness: float) -> None:
        self.samples.append((now, max(0.0, lateness)))
        while self.samples and self.samples[0][0] < now - KEEP_SECONDS:
            self.samples.popleft()

    def worst_since(self, since: float) -> float:
        """The latest wake-up since ``since`` (a clock reading), including one still pending:
        a loop so stuck that the sampler has not woken since is as late as the time passed."""
        worst = max((late for at, late in self.samples if at >= since), default=0.0)
        if self._task is not None and self.samples:
            worst = max(worst, self.clock() - self.samples[-1][0] - PERIOD)
        return worst

    def saturated_since(self, since: float) -> bool:
        """Whether the loop ran late enough since ``since`` to explain a timeout."""
        return self.worst_since(since) >= SATURATED_LATENESS

    def busy_since(self, since: float) -> bool:
        """Whether the loop ran late enough since ``since`` for fewer requests to help."""
        return self.worst_since(since) >= BUSY_LATENESS
