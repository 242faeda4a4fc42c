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

# TLS, when the launcher gives the node certificates (replication/tls/):
#   REPLIKIT_SSL_CERT_FILE, REPLIKIT_SSL_KEY_FILE   this node's server certificate and key
#   REPLIKIT_SSL_CA_FILE        the CA every certificate is checked against (set: TLS is on)
#   REPLIKIT_REPLICATION_SSLCERT, REPLIKIT_REPLICATION_SSLKEY  the replication role's client
#                               certificate (CN = the role), what replicas log in with
tls_on() {
    [ -n "${REPLIKIT_SSL_CA_FILE:-}" ]
}

# Connection options that make libpq check the server as sslmode=verify-full does.
tls_conninfo() {
    tls_on || return 0
    printf ' sslmode=verify-full sslrootcert=%s' "$(conninfo_quote "$REPLIKIT_SSL_CA_FILE")"
}

# What a replica streams from the primary with (REPLIKIT_PRIMARY_HOST and _PORT): with TLS its
# client certificate is its login (pg_hba's cert method), so no password is written down.
replication_conninfo() {
    local info
    info="host=$(conninfo_quote "$REPLIKIT_PRIMARY_HOST") port=$REPLIKIT_PRIMARY_PORT"
    info+=" user=$(conninfo_quote "$replication_user")"
    if tls_on; then
        require_env REPLIKIT_REPLICATION_SSLCERT REPLIKIT_REPLICATION_SSLKEY
        info+="$(tls_conninfo) sslcert=$(conninfo_quote "$REPLIKIT_REPLICATION_SSLCERT")"
        info+=" sslkey=$(conninfo_quote "$REPLIKIT_REPLICATION_SSLKEY")"
    else
        info+=" password=$(conninfo_quote "$REPLIKIT_REPLICATION_PASSWORD")"
    fi
    info+=" application_name=$(conninfo_quote "$REPLIKIT_NODE_NAME")"
    printf '%s' "$info"
}

# Settings that differ per node (port, listen address, name, its certificate) live in their
# own file, so a base backup of the primary does not carry the primary's port into a replica.
write_node_conf() {
    local listen=${REPLIKIT_LISTEN_ADDRESSES:-127.0.0.1}
    local sockets=${REPLIKIT_SOCKET_DIR:-}
    {
        echo "# Written by replikit for node ${REPLIKIT_NODE_NAME}; rewritten on every bootstrap."
        echo "cluster_name = $(conf_quote "$REPLIKIT_NODE_NAME")"
        echo "port = ${PGPORT}"
        echo "listen_addresses = $(conf_quote "$listen")"
        echo "unix_socket_directories = $(conf_quote "$sockets")"
        if tls_on; then
            require_env REPLIKIT_SSL_CERT_FILE REPLIKIT_SSL_KEY_FILE
            echo "ssl = on"
            echo "ssl_cert_file = $(conf_quote "$REPLIKIT_SSL_CERT_FILE")"
            echo "ssl_key_file = $(conf_quote "$REPLIKIT_SSL_KEY_FILE")"
            echo "ssl_ca_file = $(conf_quote "$REPLIKIT_SSL_CA_FILE")"
            echo "ssl_min_protocol_version = 'TLSv1.2'"
        fi
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
