"""Check that the ports a cluster needs are free, and name what holds them when they are not."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

from replication.errors import PortInUseError


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """'name (pid N)' of the listener on ``port``, when ``ss`` can tell."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    result = subprocess.run(
        [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    )
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', result.stdout)
    return f"{match.group(1)} (pid {match.group(2)})" if match else None


def require_free_ports(ports: Iterable[int], host: str = "127.0.0.1") -> None:
    for port in ports:
        if not port_is_free(port, host):
            holder = port_holder(port)
            held_by = f" by {holder}" if holder else ""
            raise PortInUseError(
                f"Port {port} on {host} is already in use{held_by}; stop it or pick other "
                f"ports with --base-port."
            )


def find_free_port_range(count: int, start: int = 20000, stop: int = 60000) -> int:
    """The first base port with ``count`` consecutive free ports (used by tests and demos)."""
    port = start
    while port + count < stop:
        if all(port_is_free(p) for p in range(port, port + count)):
            return port
        port += count
    raise PortInUseError(f"No {count} consecutive free ports between {start} and {stop}.")


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 unless tuned).

    A long-lived listener picked above it can lose its port to a client connection between
    the check and the bind; the Patroni manager's many ports are therefore picked below it.
    """
    try:
        low, _ = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return 32768
