"""The monitor looks again at once when a request needs a primary, but not in a loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.errors import PrimaryUnavailableError
from service.routing.metrics import ServiceMetrics
from service.routing.monitor import WAKE_MIN_GAP_SECONDS, NodeMonitor
from service.routing.router import Router
from service.settings import Settings

URL = "postgresql+asyncpg://app:pw@127.0.0.1:{port}/replikit"


def test_a_write_that_finds_no_primary_wakes_the_monitor(monkeypatch: Any) -> None:
    router = Router(
        Settings(_env_file=None, primary_url=URL.format(port=7000), replica_urls=[]),
        ServiceMetrics(),
    )
    wakes: list[None] = []
    monkeypatch.setattr(router.monitor, "wake", lambda: wakes.append(None))
    router.monitor.writer = None
    with pytest.raises(PrimaryUnavailableError):
        router.require_writer()
    assert len(wakes) == 1


async def test_woken_rounds_are_spaced_however_often_it_is_woken() -> None:
    monitor = NodeMonitor([], interval=0.5, metrics=ServiceMetrics())
    rounds = 0

    async def count_round() -> None:
        nonlocal rounds
        rounds += 1

    monitor.probe_all = count_round  # type: ignore[method-assign]
    task = asyncio.create_task(monitor._run())
    try:
        for _ in range(100):  # a refused write every 10 ms for one second
            monitor.wake()
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    # One round per WAKE_MIN_GAP_SECONDS (0.1 s), not one per wake; still far more often
    # than the 0.5 s health interval alone.
    assert 1 / WAKE_MIN_GAP_SECONDS - 3 <= rounds <= 1 / WAKE_MIN_GAP_SECONDS + 2, rounds
