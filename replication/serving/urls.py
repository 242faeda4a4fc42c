"""The service's database settings for a cluster: what ``replikit cluster env`` prints and
``replikit serve`` and the experiments start instances with."""

from __future__ import annotations

import shlex

from replication.tls.provision import cluster_layout
from replication.topology import ClusterState


def service_urls(state: ClusterState) -> dict[str, str]:
    """The service's database settings for this cluster; the primary is the recorded one.
    With TLS, also the CA the service checks every node's certificate against (verify-full:
    the URLs' host, 127.0.0.1, is in each server certificate's subjectAltName)."""
    urls = {
        "REPLIKIT_PRIMARY_URL": state.app_url(state.primary_node),
        "REPLIKIT_REPLICA_URLS": ",".join(state.app_url(node) for node in state.replicas),
    }
    if state.tls is not None:
        urls["REPLIKIT_DB_SSL_ROOT_CERT"] = str(cluster_layout(state).ca_cert)
    return urls


def migration_credentials(state: ClusterState) -> dict[str, str]:
    """The role ``replikit migrate`` logs in as: the owner of the schema, never the service's
    role (which may not create or alter tables)."""
    user, password = state.migration_credentials
    return {"REPLIKIT_MIGRATION_USER": user, "REPLIKIT_MIGRATION_PASSWORD": password}


def env_lines(state: ClusterState) -> list[str]:
    """``export`` lines of :func:`service_urls` and :func:`migration_credentials`, for
    ``eval "$(replikit cluster env)"``; ``replikit serve`` ignores the migration ones."""
    values = {**service_urls(state), **migration_credentials(state)}
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
