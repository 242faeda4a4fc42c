#!/usr/bin/env bash
# Scheduled backups of a compose stack (the `backup` service of docker-compose.yml): every
# REPLIKIT_BACKUP_INTERVAL seconds, a pgBackRest backup of whichever node is the primary then.
#
# pgBackRest reaches a server only through its Unix socket, from where the data directory is,
# so the backup runs in the primary's own container: this service logs in as the superuser
# over the stack's network and has the server run it (COPY ... TO PROGRAM, as the server's
# account, with the node's PGBACKREST_* settings). The statement returns when the backup is
# done; pgBackRest then expires what the retention (PGBACKREST_REPO1_RETENTION_FULL) no
# longer keeps. No Docker socket and no SSH key is needed.
#
# Environment:
#   REPLIKIT_PEERS, REPLIKIT_SUPERUSER_PASSWORD   the nodes, and how to log in
#   REPLIKIT_BACKUP_INTERVAL    seconds between backups (default 86400; 0: no scheduled backup)
#   REPLIKIT_BACKUP_FULL_EVERY  every Nth scheduled backup is full, the others incremental
#                               (default 7; the first is always full)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

require_env REPLIKIT_PEERS REPLIKIT_SUPERUSER_PASSWORD
interval=${REPLIKIT_BACKUP_INTERVAL:-86400}
full_every=${REPLIKIT_BACKUP_FULL_EVERY:-7}
[[ $interval =~ ^[0-9]+$ ]] || fail "REPLIKIT_BACKUP_INTERVAL must be a whole number of seconds, not '$interval'"
[[ $full_every =~ ^[1-9][0-9]*$ ]] || fail "REPLIKIT_BACKUP_FULL_EVERY must be a whole number from 1, not '$full_every'"

# As PID 1 nothing stops the script unless it says so; `wait` lets a signal in mid-sleep.
trap 'exit 0' TERM INT

# Run a pgBackRest command in the primary's container, through its server.
on_primary() {
    local primary=$1 command=$2
    PGPASSWORD=$REPLIKIT_SUPERUSER_PASSWORD psql --no-psqlrc --quiet --host="$primary" \
        --port=5432 --username="$superuser" --dbname=postgres --set=ON_ERROR_STOP=1 \
        --command="COPY (SELECT 1) TO PROGRAM '$command >/dev/null'"
}

# A new primary creates the stanza (init-primary.sh); a node made before the stack archived
# WAL did not, and its archive_command fails (keeping WAL in pg_wal) until one exists.
# stanza-create leaves an existing stanza as it is.
until primary=$(current_primary 5432) && on_primary "$primary" "pgbackrest stanza-create"; do
    sleep 5 &
    wait $!
done
log "the repository's stanza is in place (primary $primary)"
if [ "$interval" = 0 ]; then
    log "scheduled backups are off (REPLIKIT_BACKUP_INTERVAL=0)"
    sleep infinity &
    wait $!
fi
log "a backup every $interval s, every ${full_every}th one full"
taken=0
while true; do
    sleep "$interval" &
    wait $!
    kind=incr
    if [ $((taken % full_every)) = 0 ]; then
        kind=full
    fi
    if ! primary=$(current_primary 5432); then
        log "error: no node answers as the primary; backup skipped"
        continue
    fi
    started=$SECONDS
    if on_primary "$primary" "pgbackrest --type=$kind backup"; then
        log "$kind backup of $primary taken in $((SECONDS - started)) s"
        taken=$((taken + 1))
    else
        log "error: the $kind backup of $primary failed (its log: docker compose logs $primary)"
    fi
done
