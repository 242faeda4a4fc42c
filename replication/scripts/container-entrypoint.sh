#!/usr/bin/env bash
# Entry point of the PostgreSQL containers (official postgres image): build the node with the
# very scripts the local launcher runs, then run the server in the foreground.
#
# Environment: REPLIKIT_ROLE=primary|replica, plus what init-primary.sh (primary) or
# bootstrap-replica.sh (replica) take. Extra arguments are passed to postgres.
# Safe to restart: an existing data directory is only started.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" = 0 ]; then
    # The server refuses root: prepare what the postgres account needs, then drop to it.
    mkdir -p "$PGDATA" "${REPLIKIT_SOCKET_DIR:-/var/run/postgresql}"
    chown postgres:postgres "$(dirname "$PGDATA")" "$PGDATA" "${REPLIKIT_SOCKET_DIR:-/var/run/postgresql}"
    exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

case "${REPLIKIT_ROLE:-}" in
    primary)
        bash "$here/init-primary.sh"
        ;;
    replica)
        : "${REPLIKIT_PRIMARY_HOST:?REPLIKIT_PRIMARY_HOST must be set}"
        until pg_isready --quiet --host="$REPLIKIT_PRIMARY_HOST" \
            --port="${REPLIKIT_PRIMARY_PORT:-5432}"; do
            sleep 1
        done
        bash "$here/bootstrap-replica.sh"
        ;;
    *)
        echo "replikit: REPLIKIT_ROLE must be primary or replica, not '${REPLIKIT_ROLE:-}'" >&2
        exit 1
        ;;
esac
exec postgres -D "$PGDATA" "$@"
