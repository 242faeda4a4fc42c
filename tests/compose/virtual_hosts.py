"""Several hosts on this one machine, for running the three-host layout for real.

Each host is a network namespace with one address on a bridge they share and a Docker engine
of its own (data root, exec root and socket), started inside the namespace with ``nsenter``:
privileged containers, and so Docker in Docker, are refused on this machine, a second dockerd
in a namespace is not. Images are copied in with ``docker save | docker load`` (no registry is
reachable), so every host runs exactly the images this checkout built.

Faults are the ones real hosts have: :meth:`VirtualHost.cut` drops every packet to and from
the host (its link goes down: connections hang, nothing is refused), and
:meth:`VirtualHost.lose` is a power cut (link down, every container killed, the engine
stopped); :meth:`VirtualHost.restore` boots it again with its disks as they were.

Needs root (namespaces, links, iptables); the fixture skips otherwise, saying why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

# The hosts' addresses come from here: a /24 no route of this machine touches.
ADDRESS_POOL = ipaddress.IPv4Network("10.213.0.0/16")
ENGINE_START_SECONDS = 60.0
TOOLS = ("ip", "nsenter", "iptables", "dockerd", "docker")


def _run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of the pool that no address or route on this machine overlaps."""
    taken = []
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
    for candidate in ADDRESS_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError(f"every /24 of {ADDRESS_POOL} is routed on this machine")


@dataclass
class VirtualHost:
    """One host: its namespace, address, engine and the host side of its link."""

    name: str
    address: str
    link: str
    run_dir: Path
    data_root: Path

    @property
    def netns(self) -> str:
        return self.name

    @property
    def docker_host(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """The docker client pointed at this host's engine."""
        result = subprocess.run(
            ["docker", "-H", self.docker_host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} on {self.name} failed: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    # the engine ---------------------------------------------------------------------------
    def start_engine(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = (self.run_dir / "dockerd.log").open("ab")
        # nsenter, not `ip netns exec`: that remounts /sys, and dockerd then finds no cgroups.
        subprocess.Popen(
            [
                "nsenter", f"--net=/var/run/netns/{self.netns}", "dockerd",
                "--data-root", str(self.data_root), "--exec-root", str(self.run_dir / "x"),
                "--pidfile", str(self.pidfile), "-H", self.docker_host, "--log-level", "warn",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while self.docker("info", check=False, timeout=10) == "":
            if time.monotonic() > deadline:
                tail = (self.run_dir / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the engine of {self.name} did not answer:\n{tail}")
            time.sleep(0.5)

    def engine_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile.read_text())
        return None

    def stop_engine(self) -> None:
        """Stop the engine (its containers first, as dockerd does) and wait for it to exit."""
        pid = self.engine_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        # dockerd removes its pidfile on a clean exit; a killed one leaves it behind.
        self.pidfile.unlink(missing_ok=True)

    # faults -------------------------------------------------------------------------------
    def cut(self) -> None:
        """Every packet to and from this host is dropped from now on."""
        _run("ip", "link", "set", self.link, "down")

    def heal(self) -> None:
        _run("ip", "link", "set", self.link, "up")

    def lose(self) -> None:
        """A power cut: the network goes first, then every process dies without a shutdown."""
        self.cut()
        running = self.docker("ps", "-q").split()
        if running:
            self.docker("kill", "--signal", "KILL", *running)
        self.stop_engine()

    def restore(self) -> None:
        """Boot the lost host again: engine up, network back. Its containers stay stopped
        until someone starts them, as after a reboot with ``restart: "no"``."""
        self.start_engine()
        self.heal()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (this machine's init reaps late) is not running."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class VirtualHosts:
    """The hosts and what joins them: the bridge and the one forwarding rule it needs."""

    hosts: list[VirtualHost]
    bridge: str
    gateway: str
    scratch: Path

    def load_images(self, images: Sequence[str]) -> None:
        """Copy ``images`` from this machine's engine into every host's engine."""
        archive = self.scratch / "images.tar"
        _run("docker", "save", "-o", str(archive), *images, timeout=600)
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(lambda h: h.docker("load", "-i", str(archive), timeout=600), self.hosts))
        archive.unlink()


def _forward_rule(bridge: str) -> list[str]:
    # Docker's engine on this machine sets FORWARD's policy to DROP, and bridged frames pass
    # through iptables here (br_netfilter): hosts on the bridge may talk to each other.
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("several hosts on one machine need root (network namespaces, links)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"several hosts on one machine need {', '.join(missing)}")


@contextlib.contextmanager
def virtual_hosts(count: int) -> Iterator[VirtualHosts]:
    """``count`` hosts, each with an engine that answers; all of it removed afterwards."""
    skip_unless_possible()
    tag = secrets.token_hex(2)
    subnet = free_subnet()
    addresses = list(subnet.hosts())
    bridge = f"rkb{tag}"
    gateway = str(addresses[-1])
    scratch = Path(tempfile.mkdtemp(prefix="replikit-hosts-"))
    hosts = [
        VirtualHost(
            name=f"rkh{tag}{index}",
            address=str(addresses[index]),
            link=f"rkh{tag}{index}h",
            run_dir=Path(f"/run/rkh{tag}{index}"),
            data_root=scratch / f"host{index}",
        )
        for index in range(count)
    ]
    fleet = VirtualHosts(hosts=hosts, bridge=bridge, gateway=gateway, scratch=scratch)
    try:
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        chain, *rule = _forward_rule(bridge)
        _run("iptables", "-I", chain, "1", *rule)
        for host in hosts:
            inner = f"rkh{tag}{hosts.index(host)}c"
            _run("ip", "netns", "add", host.netns)
            _run("ip", "link", "add", host.link, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", host.netns)
            _run("ip", "link", "set", host.link, "master", bridge, "up")
            ns = ("ip", "-n", host.netns)
            _run(*ns, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", inner)
            _run(*ns, "link", "set", inner, "up")
            _run(*ns, "link", "set", "lo", "up")
            _run(*ns, "route", "add", "default", "via", gateway)
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(VirtualHost.start_engine, hosts))
        yield fleet
    finally:
        _remove(fleet)


def _remove(fleet: VirtualHosts) -> None:
    """Everything :func:`virtual_hosts` made, whatever state it got to."""
    for host in fleet.hosts:
        with contextlib.suppress(Exception):
            if host.engine_pid() is not None:
                running = host.docker("ps", "-aq", check=False).split()
                if running:
                    host.docker("rm", "-f", "-v", *running, check=False, timeout=120)
        with contextlib.suppress(Exception):
            host.stop_engine()
        # Whatever still runs in the namespace (a shim, a proxy) goes with it.
        pids = _run("ip", "netns", "pids", host.netns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _unmount_under(host.data_root)
        _unmount_under(host.run_dir)
        _run("ip", "netns", "del", host.netns, check=False)
        _run("ip", "link", "del", host.link, check=False)
        shutil.rmtree(host.run_dir, ignore_errors=True)
    _run("iptables", "-D", *_forward_rule(fleet.bridge), check=False)
    _run("ip", "link", "del", fleet.bridge, check=False)
    _unmount_under(fleet.scratch)
    shutil.rmtree(fleet.scratch, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount what a killed engine left mounted below ``directory`` (deepest first)."""
    prefix = str(directory)
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        _run("umount", "-l", point, check=False)
