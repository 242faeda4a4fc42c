"""A cluster's certificates: which it needs (a server certificate per node, a client
certificate for the replication role), putting them in place (issued by the kit's CA or copied
from a directory the user brings), checking them before anything starts, re-issuing them, and
the client side every replikit tool connects with (verify-full)."""

from __future__ import annotations

import shutil
import ssl
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from replication.errors import BadInputError
from replication.tls.authority import DEFAULT_DAYS, issue_all, issue_client, issue_server
from replication.tls.check import check_layout, public_bytes
from replication.tls.files import CertificateLayout, ServerIdentity
from replication.topology import ClusterState, NodeSpec, TlsSettings

TLS_DIR_NAME = "tls"


def cluster_layout(state: ClusterState, directory: Path | None = None) -> CertificateLayout:
    """The certificates ``state``'s cluster needs, in its TLS directory (or ``directory``):
    each server names every address clients reach it by (``host``, and the address the other
    nodes use when that differs)."""
    if directory is None:
        if state.tls is None:
            raise BadInputError("This cluster was built with --tls off; it has no certificates.")
        directory = Path(state.tls.directory)
    servers = tuple(
        ServerIdentity(node.name, tuple(dict.fromkeys([state.host, *_internal(node)])))
        for node in state.nodes
    )
    return CertificateLayout(directory, servers, (state.replication_user,))


def _internal(node: NodeSpec) -> list[str]:
    return [node.internal_host] if node.internal_host else []


def rotate_hint(state: ClusterState, data_dir: Path) -> str:
    """The fix a refusal names: re-issue (kit CA) or bring corrected files (own CA)."""
    if state.tls is not None and not state.tls.kit_ca:
        return (
            f"put a corrected file there and run 'replikit certs rotate --data-dir {data_dir} "
            f"--from DIR' (docs/security.md, 'Bring your own certificates')"
        )
    return f"issue new certificates with 'replikit certs rotate --data-dir {data_dir}'"


def source_hint(source: Path) -> str:
    return (
        f"fix it in {source} (docs/security.md names every file), or drop --tls-dir to let "
        f"replikit issue its own"
    )


def configure_new(state: ClusterState, data_dir: Path, source: Path | None) -> None:
    """Put a new cluster's certificates in ``<data-dir>/tls``: copied from ``source`` after
    checking them there (so a refusal names the user's file), else issued by a new kit CA."""
    directory = data_dir / TLS_DIR_NAME
    state.tls = TlsSettings(directory=str(directory), kit_ca=source is None)
    layout = cluster_layout(state)
    if source is not None:
        check_layout(cluster_layout(state, source.absolute()), fix=source_hint(source))
        copy_layout(cluster_layout(state, source.absolute()), layout)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        issue_all(layout)


def copy_layout(source: CertificateLayout, target: CertificateLayout) -> None:
    """Copy every file of ``source`` over ``target``'s (keys 0600), each replaced atomically;
    ``ca.key`` is never copied (a CA's key has no business next to the servers)."""
    target.directory.mkdir(parents=True, exist_ok=True)
    target.directory.chmod(0o755)
    pairs = [(source.ca_cert, target.ca_cert, 0o644)]
    for (cert, key), (to_cert, to_key) in zip(source.pairs(), target.pairs(), strict=True):
        pairs += [(cert, to_cert, 0o644), (key, to_key, 0o600)]
    for origin, destination, mode in pairs:
        tmp = destination.with_name(f".{destination.name}.tmp")
        tmp.unlink(missing_ok=True)
        shutil.copyfile(origin, tmp)
        tmp.chmod(mode)
        tmp.replace(destination)


def copy_to_new_cluster(state: ClusterState, data_dir: Path) -> None:
    """Give a cluster made from another's state (a restore) its own copy of the other's
    certificates, CA key included: the same nodes and host, so the same certificates serve."""
    if state.tls is None:
        return
    source = Path(state.tls.directory)
    directory = data_dir / TLS_DIR_NAME
    directory.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, directory, dirs_exist_ok=True)
    directory.chmod(0o755)
    state.tls = state.tls.model_copy(update={"directory": str(directory)})


def adopt_brought_ca(state: ClusterState) -> None:
    """After copying a user's certificates in: when their ``ca.crt`` is not the kit CA's any
    more, the kit's ``ca.key`` can sign nothing that is trusted, so it goes, and the cluster's
    certificates count as brought (a later rotation needs ``--from`` again)."""
    if state.tls is None:
        return
    layout = cluster_layout(state)
    if layout.ca_key.is_file():
        ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        if public_bytes(key.public_key()) != public_bytes(ca.public_key()):
            layout.ca_key.unlink()
    state.tls.kit_ca = layout.ca_key.is_file()


def reissue(state: ClusterState, data_dir: Path, *, days: int = DEFAULT_DAYS) -> None:
    """New server and client certificates from the cluster's own kit CA."""
    if state.tls is None or not state.tls.kit_ca:
        raise BadInputError(
            f"The certificates of the cluster in {data_dir} were brought by you, so replikit "
            f"cannot issue new ones; run 'replikit certs rotate --data-dir {data_dir} --from "
            f"DIR' with new ones from your CA."
        )
    layout = cluster_layout(state)
    for server in layout.servers:
        issue_server(layout, server, days=days)
    for role in layout.client_roles:
        issue_client(layout, role, days=days)


def check_cluster(state: ClusterState, data_dir: Path) -> None:
    """Refuse, in one sentence, a missing, expired or mismatched certificate of the cluster."""
    if state.tls is not None:
        check_layout(cluster_layout(state), fix=rotate_hint(state, data_dir))


def client_context(state: ClusterState) -> ssl.SSLContext | None:
    """What replikit's own connections pass asyncpg: verify-full against the cluster's CA
    (None for a cluster without TLS: asyncpg's default then)."""
    if state.tls is None:
        return None
    return ssl.create_default_context(cafile=str(cluster_layout(state).ca_cert))


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replication_login(state: ClusterState) -> str:
    """How a replica logs in to stream (libpq options, after host, port and user): with TLS
    its client certificate, the server's checked as verify-full; else the role's password."""
    if state.tls is None:
        return f"password={state.passwords.replication}"
    layout = cluster_layout(state)
    role = state.replication_user
    return " ".join(
        f"{key}={_conninfo_value(str(value))}"
        for key, value in (
            ("sslmode", "verify-full"),
            ("sslrootcert", layout.ca_cert),
            ("sslcert", layout.client_cert(role)),
            ("sslkey", layout.client_key(role)),
        )
    )


def server_expiry(state: ClusterState, node: NodeSpec) -> datetime | None:
    """When ``node``'s server certificate expires (None without TLS or without the file)."""
    if state.tls is None:
        return None
    path = cluster_layout(state).server_cert(node.name)
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None
