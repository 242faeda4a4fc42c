#!/usr/bin/env bash
# Write PgBouncer's configuration from the environment and run it in the foreground.
#
# One pooler fronts one PostgreSQL node (REPLIKIT_POOLER_TARGET_HOST): the service's URL for a
# node names its pooler, so a role or lag probe through it still reads that node's truth.
# Transaction pooling; clients authenticate with SCRAM against the node's own password hashes,
# which PgBouncer reads through auth_query as the lookup role (pooler_auth) calling
# pooler.lookup(), a SECURITY DEFINER function that answers for ordinary login roles only.
# The only secret on disk is that lookup role's password, in a 0600 file under /run.
#
# Environment:
#   REPLIKIT_POOLER_TARGET_HOST    the node (required); REPLIKIT_POOLER_TARGET_PORT (5432)
#   REPLIKIT_POOLER_PASSWORD       the lookup role's password (required)
#   REPLIKIT_POOLER_USER           the lookup role (default pooler_auth)
#   REPLIKIT_DATABASE              the database pooled (default replikit)
#   REPLIKIT_POOL_SIZE             server connections per user and database (default 40)
#   REPLIKIT_POOLER_MAX_DB_CONNECTIONS  server connections to the node in all (default 100:
#                                  half of the nodes' max_connections, 200)
#   REPLIKIT_POOLER_MAX_CLIENTS    client connections accepted (default 2000)
#   REPLIKIT_MONITOR_PASSWORD      when set, the monitor role (REPLIKIT_MONITOR_USER, default
#                                  monitor) may read the admin console's SHOW commands (a stats
#                                  user), as the monitoring profile's PgBouncer exporter does
set -euo pipefail

fail() { printf 'pgbouncer entrypoint: %s\n' "$*" >&2; exit 1; }
: "${REPLIKIT_POOLER_TARGET_HOST:?set REPLIKIT_POOLER_TARGET_HOST to the node this pooler fronts}"
: "${REPLIKIT_POOLER_PASSWORD:?set REPLIKIT_POOLER_PASSWORD (make compose-up writes one)}"
lookup_user=${REPLIKIT_POOLER_USER:-pooler_auth}
database=${REPLIKIT_DATABASE:-replikit}
for number in "${REPLIKIT_POOL_SIZE:=40}" "${REPLIKIT_POOLER_MAX_DB_CONNECTIONS:=100}" \
    "${REPLIKIT_POOLER_MAX_CLIENTS:=2000}"; do
    [[ $number =~ ^[1-9][0-9]*$ ]] || fail "pool sizes must be positive integers, not '$number'"
done
[ "$REPLIKIT_POOL_SIZE" -le "$REPLIKIT_POOLER_MAX_DB_CONNECTIONS" ] ||
    fail "REPLIKIT_POOL_SIZE ($REPLIKIT_POOL_SIZE) exceeds REPLIKIT_POOLER_MAX_DB_CONNECTIONS ($REPLIKIT_POOLER_MAX_DB_CONNECTIONS)"

conf=/run/pgbouncer
umask 077
# auth_file: "user" "password" per line, a double quote doubled.
auth_line() { printf '"%s" "%s"\n' "${1//\"/\"\"}" "${2//\"/\"\"}"; }
auth_line "$lookup_user" "$REPLIKIT_POOLER_PASSWORD" >"$conf/auth_users.txt"
stats_users=$lookup_user
if [ -n "${REPLIKIT_MONITOR_PASSWORD:-}" ]; then
    monitor_user=${REPLIKIT_MONITOR_USER:-monitor}
    auth_line "$monitor_user" "$REPLIKIT_MONITOR_PASSWORD" >>"$conf/auth_users.txt"
    stats_users+=", $monitor_user"
fi
cat >"$conf/pgbouncer.ini" <<INI
[databases]
$database = host=$REPLIKIT_POOLER_TARGET_HOST port=${REPLIKIT_POOLER_TARGET_PORT:-5432} dbname=$database

[pgbouncer]
listen_addr = *
listen_port = 6432
unix_socket_dir = $conf
pidfile =
pool_mode = transaction
; asyncpg names and caches every statement: PgBouncer prepares them on whichever server
; connection runs the next transaction.
max_prepared_statements = 500
auth_type = scram-sha-256
auth_file = $conf/auth_users.txt
auth_user = $lookup_user
auth_dbname = $database
auth_query = SELECT usename, passwd FROM pooler.lookup(\$1)
stats_users = $stats_users
default_pool_size = $REPLIKIT_POOL_SIZE
max_db_connections = $REPLIKIT_POOLER_MAX_DB_CONNECTIONS
max_client_conn = $REPLIKIT_POOLER_MAX_CLIENTS
; The service sends statement_timeout at start-up, which a transaction pooler cannot keep per
; client: the app role carries the same default on the server (init-primary.sh).
ignore_startup_parameters = statement_timeout,extra_float_digits
; A node that went away must be an error at once, as it is without a pooler, so the service's
; router moves on (measured: with PgBouncer's defaults a killed primary cost ~3 s more than
; going direct). Its container's name stops resolving: look names up again after a second,
; not 15. Its address answers nothing: a server connection whose data goes unacknowledged
; for 1.5 s is closed (TCP_USER_TIMEOUT), a connect gives up after 2 s, a failed login is
; retried after a second; an idle connection is checked before reuse after a second.
dns_max_ttl = 1
dns_nxdomain_ttl = 1
tcp_user_timeout = 1500
server_connect_timeout = 2
server_login_retry = 1
server_check_delay = 1
query_wait_timeout = 30
log_connections = 0
log_disconnections = 0
log_stats = 0
INI
exec pgbouncer "$conf/pgbouncer.ini"
