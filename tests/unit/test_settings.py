from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from replication.tls.authority import issue_ca
from replication.tls.files import CertificateLayout
from service.db.engines import connect_arguments
from service.settings import BlobBackend, Settings

URL = "postgresql+asyncpg://app:pw@127.0.0.1:6432/replikit"


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLIKIT_PRIMARY_URL", URL)
    monkeypatch.setenv("REPLIKIT_REPLICA_URLS", f"{URL}, {URL}")
    monkeypatch.setenv("REPLIKIT_ALLOWED_FORMATS", "png,jpeg")
    monkeypatch.setenv("REPLIKIT_BLOB_BACKEND", "filesystem")
    settings = Settings(_env_file=None)
    assert settings.replica_urls == [URL, URL]
    assert settings.allowed_formats == ["PNG", "JPEG"]
    assert settings.blob_backend is BlobBackend.FILESYSTEM
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.upload_rate_limit == 60


@pytest.mark.parametrize(
    "overrides",
    [
        {"primary_url": "postgresql://x@y/z"},
        {"allowed_formats": "PNG,TIFF"},
        {"max_upload_bytes": 0},
        {"upload_rate_limit": -1},
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, object]) -> None:
    values: dict[str, object] = {"primary_url": URL, **overrides}
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_root_certificate_makes_every_connection_verify_full(tmp_path: Path) -> None:
    assert "ssl" not in connect_arguments(Settings(_env_file=None, primary_url=URL))
    layout = CertificateLayout(tmp_path, ())
    issue_ca(layout)
    settings = Settings(_env_file=None, primary_url=URL, db_ssl_root_cert=layout.ca_cert)
    context = connect_arguments(settings)["ssl"]
    assert context.check_hostname is True
    assert context.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ValidationError, match="is not a file; point it at the cluster's ca"):
        Settings(_env_file=None, primary_url=URL, db_ssl_root_cert=tmp_path / "missing.crt")
