"""The kit's own certificate authority: a CA, server certificates for every node and client
certificates for the roles that log in with one, issued with the ``cryptography`` package.

Keys are ECDSA P-256 (small and fast to sign; PostgreSQL and every client here accept them).
Private keys are written 0600, certificates 0644; files are replaced atomically, so a server
reloading its configuration never reads half a file.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from replication.tls.files import CertificateLayout, ServerIdentity

CA_DAYS = 3650
DEFAULT_DAYS = 365
# Backdated a little, so a certificate is valid at once on a host whose clock is slightly behind.
BACKDATE = timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "replikit"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def subject_alt_name(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses, each as the type it is."""
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _load_ca(layout: CertificateLayout) -> tuple[x509.Certificate, PrivateKey]:
    cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{layout.ca_key} is not an ECDSA key")
    return cert, key


def issue_ca(layout: CertificateLayout, *, now: datetime | None = None) -> None:
    """A new self-signed CA in ``ca.crt`` / ``ca.key``."""
    start = (now or datetime.now(UTC)) - BACKDATE
    key = _new_key()
    name = _name("replikit CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    layout.directory.mkdir(parents=True, exist_ok=True)
    _write_key(layout.ca_key, key)
    _write_cert(layout.ca_cert, cert)


def _issue_leaf(
    layout: CertificateLayout,
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    hosts: tuple[str, ...],
    days: int,
    now: datetime | None,
) -> tuple[x509.Certificate, PrivateKey]:
    ca_cert, ca_key = _load_ca(layout)
    start = (now or datetime.now(UTC)) - BACKDATE
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(subject_alt_name(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def issue_server(
    layout: CertificateLayout,
    server: ServerIdentity,
    *,
    days: int = DEFAULT_DAYS,
    now: datetime | None = None,
) -> None:
    """``server-<node>.crt`` / ``.key``, naming every one of the node's hosts in its SAN, and
    also ``localhost`` and the node's name (for a client on the same host, and a DNS entry)."""
    cert, key = _issue_leaf(
        layout,
        common_name=server.node,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        hosts=tuple(dict.fromkeys((*server.hosts, "localhost", server.node))),
        days=days,
        now=now,
    )
    _write_key(layout.server_key(server.node), key)
    _write_cert(layout.server_cert(server.node), cert)


def issue_client(
    layout: CertificateLayout, role: str, *, days: int = DEFAULT_DAYS, now: datetime | None = None
) -> None:
    """``client-<role>.crt`` / ``.key`` with CN = the role (what pg_hba's ``cert`` checks)."""
    cert, key = _issue_leaf(
        layout,
        common_name=role,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        hosts=(),
        days=days,
        now=now,
    )
    _write_key(layout.client_key(role), key)
    _write_cert(layout.client_cert(role), cert)


def issue_all(layout: CertificateLayout, *, days: int = DEFAULT_DAYS) -> bool:
    """Every certificate of ``layout``, from its CA: the existing one when ``ca.crt`` and
    ``ca.key`` are there (so clients keep trusting it), else a new one. Returns True when a
    new CA was made."""
    new_ca = not (layout.ca_cert.is_file() and layout.ca_key.is_file())
    if new_ca:
        issue_ca(layout)
    for server in layout.servers:
        issue_server(layout, server, days=days)
    for role in layout.client_roles:
        issue_client(layout, role, days=days)
    return new_ca
