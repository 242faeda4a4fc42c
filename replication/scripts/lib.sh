# shellcheck shell=bash
# Helpers shared by the node scripts. Sourced, never run: the scripts that source it set -euo pipefail.
#
# Every script is configured only by environment variables so that the local launcher
# (replication/drivers/local/driver.py) and the container entrypoints run the very same steps.

if [ -n "${PGBIN:-}" ]; then
    PATH="$PGBIN:$PATH"
fi

log() {
    printf 'replikit node=%s step=%s %s\n' "${REPLIKIT_NODE_NAME:-?}" "${0##*/}" "$*" >&2
}

fail() {
    log "error: $*"
    exit 1
}

require_env() {
    local name
    for name in "$@"; do
        if [ -z "${!name:-}" ]; then
            fail "environment variable $name must be set"
        fi
    done
}

# Quote a value for a postgresql.conf line: single quotes doubled.
conf_quote() {
    local value=${1//\'/\'\'}
    printf "'%s'" "$value"
}

# Quote a value for a libpq conninfo string: backslashes and single quotes escaped.
conninfo_quote() {
    local value=${1//\\/\\\\}
    value=${value//\'/\\\'}
    printf "'%s'" "$value"
}

# Settings that differ per node (port, listen address, name) live in their own file, so a
# base backup of the primary does not carry the primary's port into a replica.
write_node_conf() {
    local listen=${REPLIKIT_LISTEN_ADDRESSES:-127.0.0.1}
    local sockets=${REPLIKIT_SOCKET_DIR:-}
    {
        echo "# Written by replikit for node ${REPLIKIT_NODE_NAME}; rewritten on every bootstrap."
        echo "cluster_name = $(conf_quote "$REPLIKIT_NODE_NAME")"
        echo "port = ${PGPORT}"
        echo "listen_addresses = $(conf_quote "$listen")"
        echo "unix_socket_directories = $(conf_quote "$sockets")"
    } >"$PGDATA/replikit-node.conf"
}

# WAL archiving lives in its own file, written only when REPLIKIT_ARCHIVE_COMMAND is set and
# rewritten like the node settings, so that a restored copy can be pointed at a new repository.
# The command must name no node-specific path: every replica gets this file from its base
# backup, and archives from the moment it is promoted (archive_mode=on: pgBackRest refuses
# always).
#   REPLIKIT_ARCHIVE_COMMAND  archive_command (unset: the node does not archive)
#   REPLIKIT_ARCHIVE_TIMEOUT  archive_timeout, the longest a commit waits to be archived (1s)
write_archive_conf() {
    [ -n "${REPLIKIT_ARCHIVE_COMMAND:-}" ] || return 0
    {
        echo "# Written by replikit: continuous WAL archiving; rewritten on every bootstrap."
        echo "archive_mode = on"
        echo "archive_command = $(conf_quote "$REPLIKIT_ARCHIVE_COMMAND")"
        echo "archive_timeout = $(conf_quote "${REPLIKIT_ARCHIVE_TIMEOUT:-1s}")"
    } >"$PGDATA/replikit-archive.conf"
}

# Written next to standby.signal when a failed-over primary is fenced; only a rejoin removes it.
# A container entrypoint refuses to start such a node: started, it would be a read-only node on
# the old timeline, following nobody, that readers could take for a replica.
fence_marker=replikit.fenced
export fence_marker

# The user names every node agrees on.
superuser=${REPLIKIT_SUPERUSER:-postgres}
replication_user=${REPLIKIT_REPLICATION_USER:-replicator}
app_user=${REPLIKIT_APP_USER:-app}
owner_user=${REPLIKIT_OWNER_USER:-replikit_owner}
monitor_user=${REPLIKIT_MONITOR_USER:-monitor}
pooler_user=${REPLIKIT_POOLER_USER:-pooler_auth}
database=${REPLIKIT_DATABASE:-replikit}
export superuser replication_user app_user owner_user monitor_user pooler_user database

# The node of REPLIKIT_PEERS (comma-separated host names; this node, REPLIKIT_NODE_NAME, is
# skipped) that answers on port $1 as a primary (out of recovery), if any; asked as the
# superuser with REPLIKIT_SUPERUSER_PASSWORD.
current_primary() {
    local port=$1 peers=() peer
    IFS=',' read -r -a peers <<<"${REPLIKIT_PEERS:-}"
    for peer in "${peers[@]}"; do
        if [ -z "$peer" ] || [ "$peer" = "${REPLIKIT_NODE_NAME:-}" ]; then
            continue
        fi
        if [ "$(PGPASSWORD=$REPLIKIT_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=2 psql --no-psqlrc \
            --host="$peer" --port="$port" --username="$superuser" --dbname=postgres \
            --tuples-only --no-align --command='SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; then
            printf '%s' "$peer"
            return 0
        fi
    done
    return 1
}
