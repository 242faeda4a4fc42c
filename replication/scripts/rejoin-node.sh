#!/usr/bin/env bash
# Make a stopped node (typically a failed or switched-over former primary) a streaming replica
# of the current primary: pg_rewind when its history diverged, a fresh base backup when that is
# impossible. The last line on stdout says which: result=unchanged|rewound|recloned.
#
# Environment:
#   PGDATA, PGPORT, REPLIKIT_NODE_NAME                    required
#   REPLIKIT_PRIMARY_HOST, REPLIKIT_PRIMARY_PORT          required (the current primary)
#   REPLIKIT_SUPERUSER_PASSWORD                           required (pg_rewind's source login)
#   REPLIKIT_REPLICATION_PASSWORD                         required (streaming login)
#   PGBIN, REPLIKIT_LISTEN_ADDRESSES, REPLIKIT_SOCKET_DIR, REPLIKIT_SLOT_NAME as elsewhere
#   REPLIKIT_SSL_*, REPLIKIT_REPLICATION_SSLCERT/_SSLKEY  TLS (lib.sh)
#   REPLIKIT_REJOIN_METHOD    auto (default): pg_rewind, a base backup when that fails;
#                             reclone: a base backup at once (the node's slot was invalidated,
#                             so the WAL it would stream from is gone from the primary)
#
# The replication slot must already exist on the primary (replikit creates it first).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

require_env PGDATA PGPORT REPLIKIT_NODE_NAME REPLIKIT_PRIMARY_HOST REPLIKIT_PRIMARY_PORT \
    REPLIKIT_SUPERUSER_PASSWORD REPLIKIT_REPLICATION_PASSWORD

slot=${REPLIKIT_SLOT_NAME:-$REPLIKIT_NODE_NAME}
method=${REPLIKIT_REJOIN_METHOD:-auto}
case "$method" in
    auto | reclone) ;;
    *) fail "REPLIKIT_REJOIN_METHOD must be auto or reclone, not '$method'" ;;
esac
if pg_ctl --pgdata="$PGDATA" status >/dev/null 2>&1; then
    fail "$REPLIKIT_NODE_NAME is running; stop it before rejoining it"
fi

# A fresh base backup over the node's slot, replacing everything in its data directory.
reclone() {
    log "$1; taking a fresh base backup"
    if [ -d "$PGDATA" ]; then
        find "$PGDATA" -mindepth 1 -delete
    fi
    bash "$here/bootstrap-replica.sh" >&2
    rm -f "$PGDATA/$fence_marker"
    echo "result=recloned"
    exit 0
}

if [ "$method" = reclone ]; then
    reclone "re-clone asked for (REPLIKIT_REJOIN_METHOD=reclone)"
fi
[ -s "$PGDATA/PG_VERSION" ] || fail "$PGDATA holds no cluster; bootstrap-replica.sh builds a new replica"
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

cluster_state() {
    pg_controldata "$PGDATA" | sed -n 's/^Database cluster state: *//p'
}

# pg_rewind needs a cleanly shut down target whose control file covers all of its local WAL.
#  - a crashed primary ("in production"): finish crash recovery in single-user mode, which
#    opens no port (so it can never take writes) and replays every local record, so that
#    pg_rewind sees exactly how far the old timeline went;
#  - a crashed replica ("in archive recovery"): finish recovery as a standby with no
#    upstream and no port, then stop it ("shut down in recovery").
case "$(cluster_state)" in
    "shut down" | "shut down in recovery") ;;
    "in production" | "in crash recovery")
        log "finishing crash recovery in single-user mode"
        rm -f "$PGDATA/standby.signal" "$PGDATA/recovery.signal"
        postgres --single -F -D "$PGDATA" -c archive_mode=off -c listen_addresses='' \
            template1 </dev/null >"$workdir/single.log" 2>&1 ||
            { cat "$workdir/single.log" >&2; fail "crash recovery in single-user mode failed"; }
        ;;
    *)
        log "finishing recovery as a standby with no upstream"
        touch "$PGDATA/standby.signal"
        pg_ctl --pgdata="$PGDATA" --wait --timeout=120 --log="$workdir/recovery.log" \
            -o "-c primary_conninfo='' -c listen_addresses='' -c unix_socket_directories='$workdir'" \
            start >/dev/null || { cat "$workdir/recovery.log" >&2; fail "recovery failed"; }
        pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop >/dev/null
        ;;
esac

# With TLS, pg_rewind checks the primary's certificate (verify-full) and logs in with SCRAM.
source_server="host=$REPLIKIT_PRIMARY_HOST port=$REPLIKIT_PRIMARY_PORT user=$superuser dbname=postgres"
source_server+=$(tls_conninfo)
result=rewound
log "pg_rewind from $REPLIKIT_PRIMARY_HOST:$REPLIKIT_PRIMARY_PORT"
if PGPASSWORD=$REPLIKIT_SUPERUSER_PASSWORD pg_rewind --target-pgdata="$PGDATA" \
    --source-server="$source_server" >"$workdir/rewind.log" 2>&1; then
    if grep -q "no rewind required" "$workdir/rewind.log"; then
        result=unchanged
    fi
else
    reclone "pg_rewind failed ($(tail -n 1 "$workdir/rewind.log"))"
fi

# pg_rewind copies the source's configuration files: restore this node's own settings and
# point it at the primary through its own slot.
touch "$PGDATA/standby.signal"
primary_conninfo=$(replication_conninfo)
auto_conf="$PGDATA/postgresql.auto.conf"
grep -v -E '^[[:space:]]*(primary_conninfo|primary_slot_name|synchronous_standby_names)[[:space:]]*=' \
    "$auto_conf" >"$workdir/auto.conf" || true
{
    cat "$workdir/auto.conf"
    echo "primary_conninfo = $(conf_quote "$primary_conninfo")"
    echo "primary_slot_name = $(conf_quote "$slot")"
} >"$auto_conf"
write_node_conf
rm -f "$PGDATA/$fence_marker"
log "rejoined as a replica of $REPLIKIT_PRIMARY_HOST:$REPLIKIT_PRIMARY_PORT ($result)"
echo "result=$result"
