#!/usr/bin/env bash
# Patroni's custom bootstrap method for a replikit cluster: builds the first leader's data
# directory with init-primary.sh, the same script the native manager runs, so both managers
# have the same checksums, SCRAM-only pg_hba, roles (replicator, owner, app) and database.
#
# Usage (from Patroni's bootstrap.replikit.command): patroni-bootstrap.sh ENV_FILE
#   ENV_FILE  a file of `export NAME=value` lines (0600, the server account's) holding the
#             environment init-primary.sh documents; Patroni's own process environment then
#             carries no password.
# Patroni manages synchronous_standby_names itself, so the file sets REPLIKIT_SYNC_MODE=off.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
env_file=${1:?usage: patroni-bootstrap.sh ENV_FILE}
# shellcheck source=/dev/null
. "$env_file"
exec bash "$here/init-primary.sh"
