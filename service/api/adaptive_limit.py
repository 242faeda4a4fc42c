"""An adaptive concurrency limit: how many requests one worker should run at once, from latency.

A fixed bound (``REPLIKIT_MAX_IN_FLIGHT``) that is right for one machine is wrong for the next,
and wrong on the same machine when eight instances share its two cores instead of two: past
the point where the CPU is busy, more requests in flight add no throughput, only latency,
until timeouts turn that latency into failures for everybody. The limit here follows the
gradient design of Netflix's concurrency-limits (``Gradient2Limit``) and Envoy's adaptive
concurrency filter, written small:

* **No-load latency** (``baseline``): measured, not guessed. When the loop is saturated
  and the baseline is unknown or older than ``recalibrate`` seconds, the limit drops to
  ``min_limit`` until ``WINDOW_SAMPLES`` requests that *started* at that concurrency have
  finished; their median latency is the baseline, and the limit goes back to where it was
  (Envoy's minRTT measurement). A measurement that has not got its samples within
  ``CALIBRATION_SECONDS`` (too little traffic) ends with what it has. Between two
  measurements a lower window latency lowers it. A baseline learnt from whatever latency the
  service happened to see would ratchet up under sustained overload until the limit no
  longer limited anything; one measured at low concurrency costs a few dozen milliseconds of
  reduced concurrency per interval, and only while the worker is saturated anyway.
* **Every window** (at least ``WINDOW_SECONDS`` and ``WINDOW_SAMPLES`` completed requests) the
  window's median latency is compared with it: ``gradient = tolerance * baseline / observed``,
  clamped to [0.5, 1]. Latency within ``tolerance`` times the no-load one lets the limit grow
  by ``sqrt(limit)`` (the queue it may build); beyond it the limit shrinks in proportion, by at
  most half a window. The new value is smoothed and kept within ``[min_limit, max_limit]``,
  ``max_limit`` being the static cap (``REPLIKIT_MAX_IN_FLIGHT``).
* A window in which the worker never used half its limit does not grow it: low latency then
  says nothing about what a higher concurrency would cost.
* Latency alone does not shrink it: only while this process's event loop also runs late
  (``saturated``, service/routing/loop_lag.py). A read that waits for a replica to replay a
  token, or for a slow disk, is slow without costing the worker anything, and refusing other
  requests for it would only turn a slow answer into a refusal. When the loop is late, the
  worker's own CPU is the bottleneck, and that is what fewer requests at once relieve.

Everything is driven by the clock passed in, so the unit tests run it on a fake one.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 0.1
WINDOW_SAMPLES = 20
SMOOTHING = 0.2
CALIBRATION_SECONDS = 1.0
MIN_GRADIENT = 0.5


@dataclass
class GradientLimit:
    """The limit, updated by :meth:`sample` as requests complete."""

    min_limit: int
    max_limit: int
    initial_limit: int
    tolerance: float = 2.0
    recalibrate: float = 10.0
    clock: Callable[[], float] = time.monotonic
    # Whether the event loop ran late since the given clock reading: gates any shrinking.
    saturated_since: Callable[[float], bool] = lambda _since: True
    limit: float = field(init=False)
    baseline: float | None = field(init=False, default=None)
    calibrating_since: float | None = field(init=False, default=None)
    _saved_limit: float = field(init=False)
    _next_calibration: float = field(init=False, default=0.0)
    _window: list[float] = field(init=False, default_factory=list)
    _window_started: float = field(init=False)
    _peak_in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        self.limit = float(min(max(self.initial_limit, self.min_limit), self.max_limit))
        self._saved_limit = self.limit
        self._window_started = self.clock()

    @property
    def current(self) -> int:
        return int(self.limit)

    def sample(self, started: float, in_flight: int) -> bool:
        """A request that started at ``started`` (a reading of :attr:`clock`) finished now,
        with ``in_flight`` running (itself included). Returns whether the limit changed."""
        now = self.clock()
        if self.calibrating_since is not None:
            return self._calibrate(started, now)
        self._window.append(now - started)
        self._peak_in_flight = max(self._peak_in_flight, in_flight)
        if len(self._window) < WINDOW_SAMPLES or now - self._window_started < WINDOW_SECONDS:
            return False
        saturated = self.saturated_since(self._window_started)
        if saturated and (self.baseline is None or now >= self._next_calibration):
            # The baseline only matters when the limit may shrink: measure it then.
            self._start_calibration(now)
            return True
        self._update(statistics.median(self._window), saturated)
        self._new_window(now)
        return True

    def _new_window(self, now: float) -> None:
        self._window.clear()
        self._window_started = now
        self._peak_in_flight = 0

    def _start_calibration(self, now: float) -> None:
        self._saved_limit = self.limit
        self.limit = float(self.min_limit)
        self.calibrating_since = now
        self._new_window(now)

    def _calibrate(self, started: float, now: float) -> bool:
        assert self.calibrating_since is not None
        if started >= self.calibrating_since:  # else admitted at the old concurrency
            self._window.append(now - started)
        overdue = now - self.calibrating_since >= CALIBRATION_SECONDS
        if len(self._window) < WINDOW_SAMPLES and not overdue:
            return False
        if self._window:
            self.baseline = max(statistics.median(self._window), 1e-6)
        self.limit = self._saved_limit
        self.calibrating_since = None
        self._next_calibration = now + self.recalibrate
        self._new_window(now)
        return True

    def _update(self, observed: float, saturated: bool) -> None:
        observed = max(observed, 1e-6)
        self.baseline = observed if self.baseline is None else min(self.baseline, observed)
        gradient = min(1.0, max(MIN_GRADIENT, self.tolerance * self.baseline / observed))
        if not saturated:
            gradient = 1.0
        target = self.limit * gradient + math.sqrt(self.limit)
        if target > self.limit and self._peak_in_flight < self.limit / 2:
            target = self.limit  # not using what it has: no evidence for more
        smoothed = (1 - SMOOTHING) * self.limit + SMOOTHING * target
        self.limit = min(float(self.max_limit), max(float(self.min_limit), smoothed))
