"""Where a cluster's certificates live and what each must say.

One directory holds them all (``<data-dir>/tls`` for a local cluster, or a directory a user
brings); the names are fixed, so a user's own certificates need no configuration::

    ca.crt                       the CA every client and server trusts
    ca.key                       its key (absent when the user brings certificates of their own)
    server-<node>.crt / .key     each node's server certificate, naming in its subjectAltName
                                 every address clients use to reach it
    client-<role>.crt / .key     a client certificate whose CN is the role it logs in as
                                 (the replication role: pg_hba's ``cert`` method)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class ServerIdentity:
    """A node's server certificate: its name and every host name or address clients use."""

    node: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class CertificateLayout:
    """The certificates one cluster needs, in one directory."""

    directory: Path
    servers: tuple[ServerIdentity, ...]
    client_roles: tuple[str, ...] = field(default=())

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    def server_cert(self, node: str) -> Path:
        return self.directory / f"server-{node}.crt"

    def server_key(self, node: str) -> Path:
        return self.directory / f"server-{node}.key"

    def client_cert(self, role: str) -> Path:
        return self.directory / f"client-{role}.crt"

    def client_key(self, role: str) -> Path:
        return self.directory / f"client-{role}.key"

    def moved_to(self, directory: Path) -> CertificateLayout:
        return CertificateLayout(directory, self.servers, self.client_roles)

    def pairs(self) -> list[tuple[Path, Path]]:
        """Every (certificate, key) pair the cluster uses, servers first."""
        return [
            *((self.server_cert(s.node), self.server_key(s.node)) for s in self.servers),
            *((self.client_cert(r), self.client_key(r)) for r in self.client_roles),
        ]
