"""Settings for the service commands (serve, migrate): the environment or ``.env`` first,
else the URLs of the local cluster, so `replikit serve` works right after `cluster up`.

``replikit migrate`` connects to the same nodes as a different role: the owner of the schema
(REPLIKIT_MIGRATION_USER and REPLIKIT_MIGRATION_PASSWORD, or the local cluster's owner). The
service's own settings never carry that password, so a running instance cannot alter tables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from replication.errors import BadInputError
from replication.serving.urls import service_urls
from replication.topology import load_state
from service.settings import Settings


class MigrationCredentials(BaseSettings):
    """REPLIKIT_MIGRATION_USER / REPLIKIT_MIGRATION_PASSWORD: who runs the migrations."""

    model_config = SettingsConfigDict(
        env_prefix="REPLIKIT_MIGRATION_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    user: str | None = None
    password: SecretStr | None = None


def _explain(error: ValidationError) -> str:
    problems = "; ".join(
        f"REPLIKIT_{'_'.join(str(p) for p in item['loc']).upper()}: {item['msg']}"
        for item in error.errors()
    )
    return f"The service settings are invalid ({problems}); see docs/configuration.md."


def resolve_settings(data_dir: Path) -> tuple[Settings, dict[str, str]]:
    """The settings, and the environment variables that were filled in from the cluster."""
    try:
        return Settings(), {}  # read from the environment
    except ValidationError as error:
        missing_url = any(
            item["type"] == "missing" and item["loc"] == ("primary_url",) for item in error.errors()
        )
        if not missing_url:
            raise BadInputError(_explain(error)) from None
    state = load_state(data_dir.absolute())
    if state is None:
        raise BadInputError(
            "REPLIKIT_PRIMARY_URL is not set and there is no local cluster in "
            f"{data_dir}; run 'replikit cluster up' or set the REPLIKIT_*_URL variables."
        )
    filled = service_urls(state)
    try:
        return Settings(
            primary_url=filled["REPLIKIT_PRIMARY_URL"],
            replica_urls=filled["REPLIKIT_REPLICA_URLS"],  # split by the validator
            db_ssl_root_cert=filled.get("REPLIKIT_DB_SSL_ROOT_CERT"),
        ), filled
    except ValidationError as error:
        raise BadInputError(_explain(error)) from None


def resolve_migration_urls(data_dir: Path) -> tuple[list[str], str, Path | None]:
    """Every configured node's URL with the migrations' credentials, that user's name, and the
    CA the nodes' certificates are checked against (None: no TLS setting).

    The credentials are REPLIKIT_MIGRATION_USER and REPLIKIT_MIGRATION_PASSWORD when set, else
    the local cluster's owner when the URLs came from it, else the URLs' own (a deployment
    with one role for both).
    """
    settings, filled = resolve_settings(data_dir)
    urls = [settings.primary_url, *settings.replica_urls]
    credentials = MigrationCredentials()
    if credentials.user:
        if credentials.password is None:
            raise BadInputError(
                "REPLIKIT_MIGRATION_USER is set but REPLIKIT_MIGRATION_PASSWORD is not; "
                "see docs/configuration.md."
            )
        user, password = credentials.user, credentials.password.get_secret_value()
    elif filled and (state := load_state(data_dir.absolute())) is not None:
        user, password = state.migration_credentials
    else:
        return urls, make_url(settings.primary_url).username or "?", settings.db_ssl_root_cert
    return (
        [
            make_url(url)
            .set(username=user, password=password)
            .render_as_string(hide_password=False)
            for url in urls
        ],
        user,
        settings.db_ssl_root_cert,
    )
