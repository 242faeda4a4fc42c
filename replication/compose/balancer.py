"""What the stack's HAProxy says about the ``app`` instances behind it (its stats CSV).

Scaling ``app`` is only finished when the load balancer has found and health-checked every new
instance; compose knows nothing of that, so benches and tests that scale ask HAProxy itself.
"""

from __future__ import annotations

import csv
import io

import httpx

#: The HAProxy backend that holds the service instances.
APP_BACKEND = "app"


def app_servers(admin_port: int | str, *, timeout: float = 10.0) -> list[dict[str, str]]:
    """One row of HAProxy's stats per ``app`` server (not the backend's summary row), as read
    from the admin port on 127.0.0.1: ``svname``, ``status`` (UP, DOWN, ...), ``stot`` (sessions
    so far) and the rest of HAProxy's columns."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/haproxy;csv", timeout=timeout).text
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return [r for r in rows if r["pxname"] == APP_BACKEND and r["svname"] != "BACKEND"]


def app_servers_up(admin_port: int | str) -> int:
    """How many ``app`` instances HAProxy currently sends requests to."""
    return sum(1 for r in app_servers(admin_port) if r.get("status") == "UP")
