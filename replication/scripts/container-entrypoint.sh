#!/usr/bin/env bash
# Entry point of the PostgreSQL containers: build the node with the very scripts the local
# launcher runs, then run the server in the foreground.
#
# Environment: REPLIKIT_ROLE=primary|replica (the role a node takes when the cluster is new),
# REPLIKIT_PEERS (comma-separated node host names, default: none), plus what init-primary.sh
# or bootstrap-replica.sh take. REPLIKIT_PRIMARY_HOST may name the primary outright; else an
# empty node asks its peers which one is the primary now, so a node whose volume was lost
# after a failover comes back as a replica of the new primary, never as a second primary.
# Extra arguments are passed to postgres. Safe to restart: an existing data directory is
# only started, in whatever role it has.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" = 0 ]; then
    # The server refuses root (images whose USER is root, e.g. the official postgres image):
    # prepare what the postgres account needs, then drop to it.
    mkdir -p "$PGDATA" "${REPLIKIT_SOCKET_DIR:-/var/run/postgresql}"
    chown postgres:postgres "$(dirname "$PGDATA")" "$PGDATA" "${REPLIKIT_SOCKET_DIR:-/var/run/postgresql}"
    if command -v gosu >/dev/null; then
        exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
    fi
    exec runuser -u postgres -- bash "${BASH_SOURCE[0]}" "$@"
fi
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

port=${REPLIKIT_PRIMARY_PORT:-5432}

if [ -f "$PGDATA/$fence_marker" ]; then
    fail "${REPLIKIT_NODE_NAME:-this node} is a fenced former primary and stays down; rejoin it as a replica: make compose-rejoin NODE=${REPLIKIT_NODE_NAME:-<node>} (replikit cluster rejoin ${REPLIKIT_NODE_NAME:-<node>} --data-dir .replikit/compose)"
fi
if [ -s "$PGDATA/PG_VERSION" ]; then
    # Built before: the scripts only rewrite this node's own settings.
    if [ -f "$PGDATA/standby.signal" ]; then
        REPLIKIT_PRIMARY_HOST=${REPLIKIT_PRIMARY_HOST:-unused} REPLIKIT_PRIMARY_PORT=$port \
            bash "$here/bootstrap-replica.sh"
    else
        bash "$here/init-primary.sh"
    fi
else
    primary=${REPLIKIT_PRIMARY_HOST:-}
    waited=0
    while [ -z "$primary" ]; do
        if primary=$(current_primary "$port"); then
            break
        fi
        primary=""
        if [ "${REPLIKIT_ROLE:-}" = primary ]; then
            break
        fi
        case "${REPLIKIT_ROLE:-}" in
            replica) ;;
            *) fail "REPLIKIT_ROLE must be primary or replica, not '${REPLIKIT_ROLE:-}'" ;;
        esac
        if [ $((waited % 15)) = 0 ]; then
            log "waiting for a primary among ${REPLIKIT_PEERS:-(no peers)}"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if [ -n "$primary" ]; then
        REPLIKIT_PRIMARY_HOST=$primary REPLIKIT_PRIMARY_PORT=$port bash "$here/bootstrap-replica.sh"
    else
        bash "$here/init-primary.sh"
    fi
fi
exec postgres -D "$PGDATA" "$@"
