#!/usr/bin/env bash
# Make an empty data directory a streaming replica of the primary: a base backup over its
# own physical replication slot, standby.signal, and primary_conninfo naming the node so
# that pg_stat_replication on the primary shows it by name.
#
# Environment:
#   PGDATA, PGPORT, REPLIKIT_NODE_NAME                    required
#   REPLIKIT_PRIMARY_HOST, REPLIKIT_PRIMARY_PORT          required
#   REPLIKIT_REPLICATION_PASSWORD                         required
#   PGBIN, REPLIKIT_LISTEN_ADDRESSES, REPLIKIT_SOCKET_DIR as for init-primary.sh
#   REPLIKIT_SSL_*, REPLIKIT_REPLICATION_SSLCERT/_SSLKEY  TLS (lib.sh): the base backup and the
#                             stream run over TLS, logged in with the client certificate
#   REPLIKIT_SLOT_NAME        (default: the node name)
#
# Safe to run twice: an existing replica only gets its node settings rewritten.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

require_env PGDATA PGPORT REPLIKIT_NODE_NAME REPLIKIT_PRIMARY_HOST REPLIKIT_PRIMARY_PORT \
    REPLIKIT_REPLICATION_PASSWORD

slot=${REPLIKIT_SLOT_NAME:-$REPLIKIT_NODE_NAME}

if [ -s "$PGDATA/PG_VERSION" ]; then
    if [ -f "$PGDATA/standby.signal" ] || [ -f "$PGDATA/replikit.initialized" ]; then
        log "already bootstrapped; node settings rewritten"
        write_node_conf
        exit 0
    fi
    fail "$PGDATA holds a PostgreSQL cluster that is not a replikit node; remove it and run again"
fi

mkdir -p "$PGDATA"
chmod 700 "$PGDATA"
if [ -n "$(ls -A "$PGDATA")" ]; then
    fail "$PGDATA is not empty; remove it and run again"
fi

primary_conninfo=$(replication_conninfo)

base_backup() {
    PGPASSWORD=$REPLIKIT_REPLICATION_PASSWORD pg_basebackup --pgdata="$PGDATA" \
        --dbname="$primary_conninfo" \
        --wal-method=stream --checkpoint=fast --no-password --slot="$slot" "$@"
}

log "base backup from $REPLIKIT_PRIMARY_HOST:$REPLIKIT_PRIMARY_PORT with slot $slot"
if ! output=$(base_backup --create-slot 2>&1); then
    if grep -q "already exists" <<<"$output"; then
        # A slot left by an earlier attempt (or a rejoin) keeps the WAL we need: reuse it.
        find "$PGDATA" -mindepth 1 -delete
        base_backup >/dev/null 2>&1 || fail "base backup over existing slot $slot failed"
    else
        printf '%s\n' "$output" >&2
        find "$PGDATA" -mindepth 1 -delete
        fail "base backup failed"
    fi
fi

touch "$PGDATA/standby.signal"
{
    echo "primary_conninfo = $(conf_quote "$primary_conninfo")"
    echo "primary_slot_name = $(conf_quote "$slot")"
} >>"$PGDATA/postgresql.auto.conf"
write_node_conf
log "bootstrapped as a replica of $REPLIKIT_PRIMARY_HOST:$REPLIKIT_PRIMARY_PORT"
