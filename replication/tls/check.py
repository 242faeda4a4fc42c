"""Refuse a bad certificate before anything starts, in one sentence naming the file and the fix.

What is checked, for the CA and every pair of :class:`CertificateLayout`: the file is there
and is PEM; the certificate is valid now (neither expired nor not yet valid); it was signed by
the CA in ``ca.crt``; a server certificate names every host clients use in its
subjectAltName; a client certificate's CN is its role; and the key matches the certificate.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from replication.errors import BadInputError
from replication.tls.files import CertificateLayout


class CertificateError(BadInputError):
    """A certificate or key that would make a server or client fail; nothing was started."""


def load_certificate(path: Path, fix: str) -> x509.Certificate:
    if not path.is_file():
        raise CertificateError(f"The certificate {path} is missing; {fix}.")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate; {fix}.") from None


def _load_public_key_of(path: Path, fix: str) -> bytes:
    if not path.is_file():
        raise CertificateError(f"The private key {path} is missing; {fix}.")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertificateError(
            f"{path} is not an unencrypted PEM private key (the servers cannot ask for a "
            f"passphrase); {fix}."
        ) from None
    return public_bytes(key.public_key())


def public_bytes(key: object) -> bytes:
    """A public key's DER bytes, to compare two keys."""
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def san_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of the subjectAltName (empty when there is none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def _names_host(hosts: list[str], host: str) -> bool:
    try:
        wanted = str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower() in (name.lower() for name in hosts)
    return wanted in hosts


def _check_dates(path: Path, cert: x509.Certificate, now: datetime, fix: str) -> None:
    if cert.not_valid_after_utc <= now:
        raise CertificateError(
            f"{path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {fix}."
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            f"(check this host's clock); {fix}."
        )


def _check_signed_by(path: Path, cert: x509.Certificate, ca: x509.Certificate, fix: str) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"{path} was not issued by the CA in the same directory's ca.crt, so clients "
            f"would refuse it; {fix}."
        ) from None


def check_layout(layout: CertificateLayout, *, fix: str, now: datetime | None = None) -> None:
    """Raise :class:`CertificateError` for the first problem found; return when all is well."""
    now = now or datetime.now(UTC)
    ca = load_certificate(layout.ca_cert, fix)
    _check_dates(layout.ca_cert, ca, now, fix)
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError(f"{layout.ca_cert} is not a CA certificate; {fix}.")
    for server in layout.servers:
        path = layout.server_cert(server.node)
        cert = _check_pair(path, layout.server_key(server.node), ca, now, fix)
        names = san_hosts(cert)
        missing = [host for host in server.hosts if not _names_host(names, host)]
        if missing:
            raise CertificateError(
                f"{path} does not name {', '.join(missing)} in its subjectAltName (it names "
                f"{', '.join(names) or 'nothing'}), so clients checking the host would refuse "
                f"it; {fix}."
            )
    for role in layout.client_roles:
        path = layout.client_cert(role)
        cert = _check_pair(path, layout.client_key(role), ca, now, fix)
        if common_name(cert) != role:
            raise CertificateError(
                f"{path} has the CN '{common_name(cert)}' but must have the CN '{role}', the "
                f"role it logs in as; {fix}."
            )


def _check_pair(
    cert_path: Path, key_path: Path, ca: x509.Certificate, now: datetime, fix: str
) -> x509.Certificate:
    cert = load_certificate(cert_path, fix)
    _check_dates(cert_path, cert, now, fix)
    _check_signed_by(cert_path, cert, ca, fix)
    if _load_public_key_of(key_path, fix) != public_bytes(cert.public_key()):
        raise CertificateError(f"{key_path} is not the key of {cert_path}; {fix}.")
    return cert
