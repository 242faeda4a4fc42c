"""The kit's CA and the check that refuses a bad certificate before anything starts: each
refusal is one sentence that names the file and the fix."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from replication.tls.authority import issue_all, issue_client, issue_server
from replication.tls.check import CertificateError, check_layout, san_hosts
from replication.tls.files import CertificateLayout, ServerIdentity

FIX = "issue new certificates with 'replikit certs rotate'"


@pytest.fixture
def layout(tmp_path: Path) -> CertificateLayout:
    servers = (ServerIdentity("pg0", ("127.0.0.1",)), ServerIdentity("pg1", ("127.0.0.1",)))
    issued = CertificateLayout(tmp_path / "tls", servers, ("replicator",))
    assert issue_all(issued) is True
    return issued


def refusal(layout: CertificateLayout) -> str:
    with pytest.raises(CertificateError) as caught:
        check_layout(layout, fix=FIX)
    message = str(caught.value)
    assert message.endswith(f"; {FIX}.")
    assert "\n" not in message
    return message


def test_an_issued_set_passes_and_names_every_address(layout: CertificateLayout) -> None:
    check_layout(layout, fix=FIX)
    cert = x509.load_pem_x509_certificate(layout.server_cert("pg0").read_bytes())
    assert set(san_hosts(cert)) == {"127.0.0.1", "localhost", "pg0"}
    assert layout.server_key("pg0").stat().st_mode & 0o777 == 0o600
    assert layout.ca_cert.stat().st_mode & 0o777 == 0o644


def test_issuing_again_keeps_the_ca(layout: CertificateLayout) -> None:
    ca = layout.ca_cert.read_bytes()
    assert issue_all(layout) is False
    assert layout.ca_cert.read_bytes() == ca
    check_layout(layout, fix=FIX)


def test_a_missing_key_is_refused_naming_it(layout: CertificateLayout) -> None:
    layout.server_key("pg1").unlink()
    assert f"The private key {layout.server_key('pg1')} is missing" in refusal(layout)


def test_a_missing_ca_is_refused_naming_it(layout: CertificateLayout) -> None:
    layout.ca_cert.unlink()
    assert f"The certificate {layout.ca_cert} is missing" in refusal(layout)


def test_an_expired_certificate_is_refused(layout: CertificateLayout) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    issue_server(layout, layout.servers[0], days=10, now=long_ago)
    assert f"{layout.server_cert('pg0')} expired on " in refusal(layout)


def test_a_certificate_without_the_clients_address_is_refused(
    layout: CertificateLayout,
) -> None:
    issue_server(layout, ServerIdentity("pg1", ("10.1.2.3",)))
    message = refusal(layout)
    assert f"{layout.server_cert('pg1')} does not name 127.0.0.1 in its subjectAltName" in message
    assert "10.1.2.3" in message


def test_a_certificate_from_another_ca_is_refused(
    layout: CertificateLayout, tmp_path: Path
) -> None:
    other = layout.moved_to(tmp_path / "other")
    issue_all(other)
    for path in (other.server_cert("pg0"), other.server_key("pg0")):
        shutil.copy(path, layout.directory / path.name)
    assert f"{layout.server_cert('pg0')} was not issued by the CA" in refusal(layout)


def test_a_key_that_does_not_match_is_refused(layout: CertificateLayout) -> None:
    shutil.copy(layout.server_key("pg1"), layout.server_key("pg0"))
    assert f"{layout.server_key('pg0')} is not the key of {layout.server_cert('pg0')}" in (
        refusal(layout)
    )


def test_a_client_certificate_for_another_role_is_refused(layout: CertificateLayout) -> None:
    issue_client(layout, "someone")
    for suffix in ("crt", "key"):
        shutil.copy(
            layout.directory / f"client-someone.{suffix}",
            layout.directory / f"client-replicator.{suffix}",
        )
    assert "has the CN 'someone' but must have the CN 'replicator'" in refusal(layout)


def test_a_file_that_is_not_a_certificate_is_refused(layout: CertificateLayout) -> None:
    layout.client_cert("replicator").write_text("not a certificate\n")
    assert f"{layout.client_cert('replicator')} is not a PEM certificate" in refusal(layout)
