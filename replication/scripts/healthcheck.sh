#!/usr/bin/env bash
# Container healthcheck: green only when the node is ready in a role, whichever it has now
# (roles move on failover): a primary out of recovery, or a replica whose WAL receiver
# streams. Environment: PGPORT, REPLIKIT_SUPERUSER_PASSWORD, PGBIN as for the other scripts.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"
require_env PGPORT REPLIKIT_SUPERUSER_PASSWORD

state=$(PGPASSWORD=$REPLIKIT_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=2 psql --no-psqlrc \
    --host=127.0.0.1 --port="$PGPORT" --username="$superuser" --dbname=postgres \
    --tuples-only --no-align --command="SELECT CASE WHEN pg_is_in_recovery()
        THEN coalesce((SELECT status FROM pg_stat_wal_receiver), 'no receiver')
        ELSE 'primary' END")
case "$state" in
    primary | streaming) exit 0 ;;
    *) echo "not ready: $state" >&2; exit 1 ;;
esac
