"""Settings for the service commands (serve, migrate): the environment or ``.env`` first,
else the URLs of the local cluster, so `replikit serve` works right after `cluster up`."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from replication.cluster import service_urls
from replication.errors import BadInputError
from replication.topology import load_state
from service.settings import Settings


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
        ), filled
    except ValidationError as error:
        raise BadInputError(_explain(error)) from None
