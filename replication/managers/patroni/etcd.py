"""The three etcd members a local Patroni cluster elects its leader through, as local
processes on loopback (data under ``<data-dir>/etcd/etcdN``, pids in ``run/``)."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from replication.drivers.local.processes import ProcessTable
from replication.errors import ClusterTimeoutError
from replication.managers.base import ConsensusView
from replication.server_user import ServerUser
from replication.topology import LOOPBACK, PatroniSettings

ETCD_MEMBERS = 3
HTTP_TIMEOUT_SECONDS = 3.0
# Patroni's default ``namespace``: its keys live under /service/<scope>/ in etcd.
PATRONI_NAMESPACE = "/service"


class LocalEtcd:
    """The members of one cluster, started, watched and stopped by replikit."""

    def __init__(
        self,
        *,
        data_dir: Path,
        user: ServerUser,
        settings: PatroniSettings,
        processes: ProcessTable,
    ) -> None:
        self.data_dir = data_dir
        self.user = user
        self.settings = settings
        self.processes = processes

    def _name(self, index: int) -> str:
        return f"etcd{index}"

    def running(self, index: int) -> bool:
        name = self._name(index)
        return self.processes.pid(name, str(self.data_dir / "etcd" / name)) is not None

    def start(self) -> None:
        """Start every etcd member that is not running; return once the cluster is healthy.

        Loopback only, for clients and peers. The v3 API Patroni's etcd3 backend uses is on
        by default; the v2 API stays off. Heartbeat 100 ms and election timeout 1 s are
        etcd's own defaults, ample on loopback.
        """
        peers = ",".join(
            f"{self._name(i)}=http://{LOOPBACK}:{port}"
            for i, port in enumerate(self.settings.etcd_peer_ports)
        )
        for index in range(ETCD_MEMBERS):
            if self.running(index):
                continue
            name = self._name(index)
            member_dir = self.data_dir / "etcd" / name
            self.user.make_dir(member_dir, mode=0o700)
            client = f"http://{LOOPBACK}:{self.settings.etcd_client_ports[index]}"
            peer = f"http://{LOOPBACK}:{self.settings.etcd_peer_ports[index]}"
            self.processes.spawn(
                name,
                [
                    shutil.which("etcd") or "etcd",
                    f"--name={name}",
                    f"--data-dir={member_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster={peers}",
                    f"--initial-cluster-token={self.settings.scope}",
                    "--initial-cluster-state=new",
                    "--log-level=warn",
                ],
            )
        deadline = time.monotonic() + 30
        while not all(self._healthy(port) for port in self.settings.etcd_client_ports):
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"etcd did not become healthy within 30 s; see {self.data_dir / 'logs'}."
                )
            time.sleep(0.1)

    def _healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{LOOPBACK}:{port}/health", timeout=HTTP_TIMEOUT_SECONDS
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def view(self) -> ConsensusView | None:
        """The leader key and member keys straight from etcd (one range read over the v3
        JSON gateway), not through an agent, whose view lags by up to a loop; None when no
        etcd member answers."""
        prefix = f"{PATRONI_NAMESPACE}/{self.settings.scope}/".encode()
        body = json.dumps(
            {
                "key": base64.b64encode(prefix).decode(),
                # The range [prefix, prefix with its last byte + 1) is every key under it.
                "range_end": base64.b64encode(prefix[:-1] + bytes([prefix[-1] + 1])).decode(),
            }
        ).encode()
        for port in self.settings.etcd_client_ports:
            request = urllib.request.Request(
                f"http://{LOOPBACK}:{port}/v3/kv/range", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
                    answer = json.loads(response.read())
            except (OSError, ValueError):
                continue
            keys = {
                base64.b64decode(kv["key"])[len(prefix) :].decode(): base64.b64decode(
                    kv.get("value", "")
                ).decode()
                for kv in answer.get("kvs", [])
            }
            states = {}
            for key, value in keys.items():
                if key.startswith("members/"):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        states[key.removeprefix("members/")] = str(json.loads(value)["state"])
            return ConsensusView(leader=keys.get("leader") or None, member_states=states)
        return None

    def stop(self) -> None:
        for index in range(ETCD_MEMBERS):
            name = self._name(index)
            self.processes.signal(name, str(self.data_dir / "etcd" / name), signal.SIGTERM, 15)
