#!/usr/bin/env bash
# Patroni's custom bootstrap method for a replikit cluster: builds the first leader's data
# directory with init-primary.sh, the same script the native manager runs, so both managers
# have the same checksums, SCRAM-only pg_hba, roles (replicator, owner, app) and database.
#
# Usage (from Patroni's bootstrap.replikit.command): patroni-bootstrap.sh [ENV_FILE]
#   ENV_FILE  a file of `export NAME=value` lines (0600, the server account's) holding the
#             environment init-primary.sh documents; the local manager's Patroni process
#             environment then carries no password. Without it (the HA containers, whose
#             environment already holds the passwords) the inherited environment is used.
# Patroni manages synchronous_standby_names itself, so the bootstrap always runs with
# REPLIKIT_SYNC_MODE=off.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$#" -gt 0 ]; then
    # shellcheck source=/dev/null
    . "$1"
fi
export REPLIKIT_SYNC_MODE=off
exec bash "$here/init-primary.sh"
