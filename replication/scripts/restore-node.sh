#!/usr/bin/env bash
# Build a new primary from a pgBackRest backup (a compose stack's restore, run in a one-off
# container of the NEW stack's pg0 as postgres): restore the backup into the empty $PGDATA,
# recover from the SOURCE repository to the target and promote, on a temporary server with no
# TCP listener; then create the stanza in this stack's own (new, empty) repository, check that
# a WAL segment reaches it, and stop. The container's entrypoint then starts the node as an
# ordinary primary, and the other nodes clone it.
#
# Environment (besides PGDATA and the node's PGBACKREST_* settings, which name the new
# repository):
#   REPLIKIT_RESTORE_REPO     the source repository's path (a read-only mount of its volume)
#   REPLIKIT_RESTORE_SET      the backup label to restore
#   REPLIKIT_RESTORE_TYPE     default (to the end of the archive) | time | lsn
#   REPLIKIT_RESTORE_TARGET   the time or LSN, for time and lsn (inclusive)
#   REPLIKIT_RESTORE_TIMEOUT  seconds recovery may take (default 600)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

require_env PGDATA PGPORT REPLIKIT_RESTORE_REPO REPLIKIT_RESTORE_SET
restore_type=${REPLIKIT_RESTORE_TYPE:-default}
timeout=${REPLIKIT_RESTORE_TIMEOUT:-600}

if [ -s "$PGDATA/PG_VERSION" ]; then
    fail "$PGDATA already holds a cluster; a restore builds a new one"
fi
mkdir -p "$PGDATA"
chmod 700 "$PGDATA"

source_repo="--repo1-path=$REPLIKIT_RESTORE_REPO"
recovery=(--type="$restore_type")
case "$restore_type" in
    default) ;;
    time | lsn)
        require_env REPLIKIT_RESTORE_TARGET
        recovery+=(--target="$REPLIKIT_RESTORE_TARGET" --target-action=promote)
        ;;
    *) fail "REPLIKIT_RESTORE_TYPE must be default, time or lsn, not '$restore_type'" ;;
esac

log "restoring backup $REPLIKIT_RESTORE_SET ($restore_type ${REPLIKIT_RESTORE_TARGET:-})"
pgbackrest "$source_repo" --set="$REPLIKIT_RESTORE_SET" "${recovery[@]}" \
    --recovery-option="restore_command=pgbackrest $source_repo archive-get %f \"%p\"" restore

# This stack's own node and archive settings (the restored files hold the source's).
write_node_conf
write_archive_conf

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
log "recovering"
# Returns once the server accepts connections: read-only once recovery is consistent.
pg_ctl --pgdata="$PGDATA" --wait --timeout="$timeout" --log="$workdir/server.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$workdir' -c synchronous_standby_names=''" \
    start >/dev/null || { tail -n 12 "$workdir/server.log" >&2; fail "the restored server did not start (its log above)"; }
waited=0
until [ "$(psql --host="$workdir" --port="$PGPORT" --username="$superuser" --dbname=postgres \
    --no-psqlrc --tuples-only --no-align --command='SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    if ! pg_ctl --pgdata="$PGDATA" status >/dev/null 2>&1; then
        tail -n 12 "$workdir/server.log" >&2
        fail "the restored server stopped during recovery (its log above)"
    fi
    if [ "$waited" -ge $((timeout * 5)) ]; then
        pg_ctl --pgdata="$PGDATA" -m immediate stop >/dev/null 2>&1 || true
        tail -n 12 "$workdir/server.log" >&2
        fail "recovery took longer than $timeout s"
    fi
    sleep 0.2
    waited=$((waited + 1))
done
log "promoted; starting the new archive"
# What recovery needed (written by pgBackRest into postgresql.auto.conf) must not stay.
psql --host="$workdir" --port="$PGPORT" --username="$superuser" --dbname=postgres \
    --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --command='ALTER SYSTEM RESET ALL' >/dev/null
pgbackrest --pg1-socket-path="$workdir" stanza-create
pgbackrest --pg1-socket-path="$workdir" check
pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop >/dev/null
log "restored"
