"""wrk, the bench's load generator: one C thread pinned to one core.

Why wrk: it is C with one event loop per thread, so one thread drives 16 keep-alive
connections at tens of thousands of requests per second on a fraction of a core, where a Python
load generator (Locust, an httpx loop) would take the CPU the service needs on a 2-core
machine. ``taskset`` keeps it on the last core, so it can never take both. Debian ships it;
:func:`require_wrk` installs it with apt when it is missing (as root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadtests.benchmarks.packages import require_program

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
CONSISTENCY_HEADER = "X-Replikit-Consistency"


@dataclass
class WrkResult:
    """One wrk run: successful requests (2xx/3xx) per second and latency percentiles (ms)."""

    requests: int
    failed: int  # non-2xx/3xx answers plus socket errors
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def ok_per_second(self) -> float:
        return max(self.requests - self.failed, 0) / self.seconds if self.seconds else 0.0


def require_wrk() -> str:
    return require_program("wrk", "wrk")


def _milliseconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read wrk's ``--latency`` report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if total is None or p50 is None or p99 is None:
        raise RuntimeError(f"could not read wrk's output: {output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if socket:
        failed += sum(int(group) for group in socket.groups())
    return WrkResult(
        requests=int(total.group(1)),
        failed=failed,
        seconds=_milliseconds(total.group(2) + total.group(3)) / 1000,
        p50_ms=_milliseconds(p50.group(1)),
        p99_ms=_milliseconds(p99.group(1)),
    )


def wrk_command(
    url: str, *, seconds: float, connections: int, script: Path | None, headers: dict[str, str]
) -> list[str]:
    """wrk with one thread, on the last core when taskset is there."""
    command = [
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    taskset = shutil.which("taskset")
    cores = os.cpu_count() or 1
    if taskset and cores > 1:
        command = [taskset, "-c", str(cores - 1), *command]
    return [*command, url]


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    command = wrk_command(
        url, seconds=seconds, connections=connections, script=script, headers=headers or {}
    )
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    return parse_wrk(completed.stdout)


def multipart_file(boundary: str, data: bytes, *, filename: str, content_type: str) -> bytes:
    """A multipart/form-data body of one field ``file``, built once for a wrk script to send
    as is (Lua has no multipart encoder)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


def lua_body_loader(body_file: Path) -> str:
    """Lua for a wrk script: ``body`` holds ``body_file``, read once per thread at start."""
    return f"""local body = nil
function init(args)
  local f = assert(io.open("{body_file}", "rb"))
  body = f:read("*a")
  f:close()
end"""


def write_mix_script(
    path: Path,
    *,
    read_path: str,
    body_file: Path,
    boundary: str,
    headers: dict[str, str],
    upload_every: int = 10,
) -> Path:
    """A wrk Lua script: every ``upload_every``-th request uploads the multipart body read once
    from ``body_file``, the others GET ``read_path``. It keeps the last ``X-Replikit-LSN`` an
    upload returned and sends it with the reads, as a read-your-writes client would."""
    header_lines = "".join(f'  h["{name}"] = "{value}"\n' for name, value in headers.items())
    path.write_text(
        f"""-- generated by loadtests/benchmarks/wrk.py
local counter = 0
local token = nil
{lua_body_loader(body_file)}

local function base_headers()
  local h = {{}}
{header_lines}  return h
end

request = function()
  counter = counter + 1
  local h = base_headers()
  if counter % {upload_every} == 0 then
    h["Content-Type"] = "multipart/form-data; boundary={boundary}"
    return wrk.format("POST", "/api/v1/images/upload", h, body)
  end
  if token then h["X-Replikit-LSN"] = token end
  return wrk.format("GET", "{read_path}", h)
end

response = function(status, headers, body)
  local lsn = headers["X-Replikit-LSN"] or headers["x-replikit-lsn"]
  if lsn then token = lsn end
end
"""
    )
    return path
