"""Check that the ports a cluster needs are free, and name what holds them when they are not."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterable

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
