#!/usr/bin/env bash
# Initialise a PostgreSQL data directory as a replikit primary: checksums, replication
# settings, SCRAM-only pg_hba, and the replicator / owner / app roles with the app's database.
#
# Environment:
#   PGDATA, PGPORT, REPLIKIT_NODE_NAME                   required
#   REPLIKIT_SUPERUSER_PASSWORD, REPLIKIT_REPLICATION_PASSWORD, REPLIKIT_OWNER_PASSWORD,
#   REPLIKIT_APP_PASSWORD                                required
#   REPLIKIT_SUPERUSER, REPLIKIT_REPLICATION_USER, REPLIKIT_OWNER_USER, REPLIKIT_APP_USER,
#   REPLIKIT_MONITOR_USER, REPLIKIT_DATABASE   role and database names (defaults in lib.sh)
#   PGBIN                     directory of the server binaries (else PATH)
#   REPLIKIT_SYNC_MODE        off | on | quorum (default off)
#   REPLIKIT_STANDBY_NAMES    comma-separated replica names, needed when sync is on/quorum
#   REPLIKIT_HBA_ADDRESS      comma-separated address ranges (or samenet) allowed to connect
#                             (default 127.0.0.1/32)
#   REPLIKIT_LISTEN_ADDRESSES (default 127.0.0.1), REPLIKIT_SOCKET_DIR (default: no socket)
#   REPLIKIT_WAL_KEEP_SIZE    (default 256MB), REPLIKIT_MAX_CONNECTIONS (default 200)
#   REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE  the most WAL a replication slot may hold back before
#                             PostgreSQL invalidates it (default 4GB; -1: no limit)
#   REPLIKIT_MONITOR_PASSWORD when set, a login role (REPLIKIT_MONITOR_USER, default monitor)
#                             with only pg_monitor's rights, for metrics exporters
#   REPLIKIT_POOLER_PASSWORD  when set, the connection poolers' lookup role (REPLIKIT_POOLER_USER,
#                             default pooler_auth) and pooler.lookup(), which hands PgBouncer's
#                             auth_query the SCRAM hash of an ordinary login role, never of a
#                             superuser or a replication role
#   REPLIKIT_APP_STATEMENT_TIMEOUT  the app role's statement_timeout on the server (default 30s):
#                             what bounds its statements behind a transaction pooler, which
#                             cannot pass the service's own start-up setting through
#   REPLIKIT_ARCHIVE_COMMAND, REPLIKIT_ARCHIVE_TIMEOUT   continuous WAL archiving (lib.sh)
#   REPLIKIT_ARCHIVE_INIT_COMMAND  run once (bash -c) while the new cluster's temporary server
#                             runs, e.g. to create the backup repository's stanza; it finds the
#                             server's socket directory in REPLIKIT_INIT_SOCKET_DIR
#   REPLIKIT_SSL_CERT_FILE, REPLIKIT_SSL_KEY_FILE, REPLIKIT_SSL_CA_FILE  TLS (lib.sh): ssl = on,
#                             pg_hba with hostssl rules only (replication with its client
#                             certificate) and plain TCP refused by an explicit reject rule
#
# The superuser is reachable on the local socket only by the OS account that runs this script
# (the one that owns the cluster and runs its server: `postgres` as root or in a container, the
# user themself otherwise), through the peer map "replikit" in pg_ident.conf; everyone else
# needs a SCRAM password over TCP.
#
# Least privilege: the owner role (default replikit_owner) owns the database and its public
# schema and runs the migrations; the app role the service logs in as may connect to that
# database only and read and write the rows of the owner's tables (default privileges cover
# the tables of future migrations), but create nothing: no table, schema, function or
# temporary object. Nobody but the superuser may connect to postgres or template1, except
# members of pg_monitor (the exporters read statistics from postgres).
#
# Safe to run twice: an already initialised directory only gets its node settings rewritten.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=replication/scripts/lib.sh
. "$here/lib.sh"

require_env PGDATA PGPORT REPLIKIT_NODE_NAME REPLIKIT_SUPERUSER_PASSWORD \
    REPLIKIT_REPLICATION_PASSWORD REPLIKIT_OWNER_PASSWORD REPLIKIT_APP_PASSWORD

sync_mode=${REPLIKIT_SYNC_MODE:-off}
hba_address=${REPLIKIT_HBA_ADDRESS:-127.0.0.1/32}
marker="$PGDATA/replikit.initialized"

if [ -s "$PGDATA/PG_VERSION" ]; then
    if [ -f "$marker" ]; then
        log "already initialised; node settings rewritten"
        write_node_conf
        write_archive_conf
        exit 0
    fi
    fail "$PGDATA holds a PostgreSQL cluster that replikit did not finish initialising; remove it and run again"
fi

standby_names() {
    local names=() name quoted=""
    IFS=',' read -r -a names <<<"${REPLIKIT_STANDBY_NAMES:-}"
    for name in "${names[@]}"; do
        [ -n "$name" ] || continue
        quoted+="${quoted:+, }\"$name\""
    done
    [ -n "$quoted" ] || fail "REPLIKIT_SYNC_MODE=$sync_mode needs REPLIKIT_STANDBY_NAMES"
    printf '%s' "$quoted"
}

case "$sync_mode" in
    off) sync_names="" ;;
    on) sync_names="FIRST 1 ($(standby_names))" ;;
    quorum) sync_names="ANY 1 ($(standby_names))" ;;
    *) fail "REPLIKIT_SYNC_MODE must be off, on or quorum, not '$sync_mode'" ;;
esac

# The OS account that owns the cluster: whoever runs initdb, and so the server.
os_user=$(id -un 2>/dev/null) ||
    fail "the OS account $(id -u) has no name; run this script as an account listed in /etc/passwd"

mkdir -p "$PGDATA"
chmod 700 "$PGDATA"
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
printf '%s\n' "$REPLIKIT_SUPERUSER_PASSWORD" >"$workdir/pwfile"

log "initdb"
initdb --pgdata="$PGDATA" --data-checksums --username="$superuser" \
    --pwfile="$workdir/pwfile" --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --no-locale >"$workdir/initdb.log" 2>&1 ||
    { cat "$workdir/initdb.log" >&2; fail "initdb failed"; }

cat >"$PGDATA/replikit.conf" <<CONF
# Written by replikit init-primary.sh: replication settings shared by every node.
wal_level = replica
max_wal_senders = 20
max_replication_slots = 20
wal_keep_size = $(conf_quote "${REPLIKIT_WAL_KEEP_SIZE:-256MB}")
max_slot_wal_keep_size = $(conf_quote "${REPLIKIT_MAX_SLOT_WAL_KEEP_SIZE:-4GB}")
hot_standby = on
hot_standby_feedback = on
wal_log_hints = on
wal_receiver_status_interval = 1s
password_encryption = 'scram-sha-256'
max_connections = ${REPLIKIT_MAX_CONNECTIONS:-200}
synchronous_standby_names = $(conf_quote "$sync_names")
log_line_prefix = '%m [%p] %q%u@%d '
CONF
{
    echo ""
    echo "include = 'replikit.conf'"
    echo "include_if_exists = 'replikit-node.conf'"
    echo "include_if_exists = 'replikit-archive.conf'"
} >>"$PGDATA/postgresql.conf"

IFS=',' read -r -a addresses <<<"$hba_address"
if tls_on; then
    # TLS only: replication logs in with its client certificate (cert: verify-full, CN = role),
    # everyone else with SCRAM over TLS; plain TCP from anywhere is refused by name.
    {
        echo "# Written by replikit: TLS only; SCRAM passwords from $hba_address only;"
        echo "# replication only for $replication_user, with its client certificate."
        echo "# TYPE   DATABASE     USER                 ADDRESS          METHOD"
        echo "local    all          $superuser                            peer map=replikit"
        for address in "${addresses[@]}"; do
            echo "hostssl  replication  $replication_user    $address     cert"
            echo "hostssl  all          $replication_user    $address     reject"
            echo "hostssl  all          all                  $address     scram-sha-256"
        done
        echo "host     all          all                  all              reject"
        echo "host     replication  all                  all              reject"
    } >"$PGDATA/pg_hba.conf"
else
    {
        echo "# Written by replikit: SCRAM passwords from $hba_address only;"
        echo "# replication only for $replication_user."
        echo "# TYPE  DATABASE     USER                 ADDRESS          METHOD"
        echo "local   all          $superuser                            peer map=replikit"
        for address in "${addresses[@]}"; do
            echo "host    replication  $replication_user    $address     scram-sha-256"
            echo "host    all          $replication_user    $address     reject"
            echo "host    all          all                  $address     scram-sha-256"
        done
    } >"$PGDATA/pg_hba.conf"
fi
{
    echo "# Written by replikit: only the OS account that owns this cluster may log in as"
    echo "# the superuser on the local socket."
    echo "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME"
    echo "replikit   \"$os_user\"  \"$superuser\""
} >"$PGDATA/pg_ident.conf"
write_node_conf
write_archive_conf

log "creating roles and database"
pg_ctl --pgdata="$PGDATA" --wait --timeout=60 --log="$workdir/server.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$workdir' -c synchronous_standby_names='' -c archive_mode=off" \
    start >/dev/null || { cat "$workdir/server.log" >&2; fail "temporary server did not start"; }
psql --host="$workdir" --port="$PGPORT" --username="$superuser" --dbname=postgres \
    --no-psqlrc --quiet --set=ON_ERROR_STOP=1 \
    --set=replication_user="$replication_user" --set=app_user="$app_user" \
    --set=owner_user="$owner_user" --set=database="$database" \
    --set=statement_timeout="${REPLIKIT_APP_STATEMENT_TIMEOUT:-30s}" <<'SQL' ||
\getenv replication_password REPLIKIT_REPLICATION_PASSWORD
\getenv owner_password REPLIKIT_OWNER_PASSWORD
\getenv app_password REPLIKIT_APP_PASSWORD
CREATE ROLE :"replication_user" WITH LOGIN REPLICATION PASSWORD :'replication_password';
CREATE ROLE :"owner_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'owner_password';
CREATE ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'app_password';
CREATE DATABASE :"database" OWNER :"owner_user";
-- CONNECT and TEMPORARY are PUBLIC's by default on every database: take them back, so a role
-- reaches only the databases it is granted (the superuser needs no grant, an owner has its own).
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE postgres TO pg_monitor;
GRANT CONNECT ON DATABASE :"database" TO :"app_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
\connect :"database"
ALTER SCHEMA public OWNER TO :"owner_user";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_user";
-- Rows only, on every table and sequence the owner makes from now on (the migrations).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_user" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_user" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app_user";
-- Functions are executable by PUBLIC by default; the app calls none of the owner's own.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_user" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER ROLE :"app_user" IN DATABASE :"database" SET statement_timeout = :'statement_timeout';
SQL
    { pg_ctl --pgdata="$PGDATA" -m fast stop >/dev/null; fail "creating roles failed"; }
if [ -n "${REPLIKIT_MONITOR_PASSWORD:-}" ]; then
    # Exporters read statistics and replication state; pg_monitor is all they need.
    psql --host="$workdir" --port="$PGPORT" --username="$superuser" --dbname=postgres \
        --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --set=monitor_user="$monitor_user" <<'SQL' ||
\getenv monitor_password REPLIKIT_MONITOR_PASSWORD
CREATE ROLE :"monitor_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    IN ROLE pg_monitor PASSWORD :'monitor_password';
SQL
        { pg_ctl --pgdata="$PGDATA" -m fast stop >/dev/null; fail "creating the monitor role failed"; }
fi
if [ -n "${REPLIKIT_POOLER_PASSWORD:-}" ]; then
    # PgBouncer's auth_query runs as this role in the pooled database. It may read password
    # hashes through pooler.lookup() only (pg_authid is the superuser's), and the function
    # answers no row for a superuser, a replication role or a role that cannot log in: the
    # pooler never becomes a way around pg_hba's rules for those.
    psql --host="$workdir" --port="$PGPORT" --username="$superuser" --dbname="$database" \
        --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --set=pooler_user="$pooler_user" \
        --set=database="$database" <<'SQL' ||
\getenv pooler_password REPLIKIT_POOLER_PASSWORD
CREATE ROLE :"pooler_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'pooler_password';
GRANT CONNECT ON DATABASE :"database" TO :"pooler_user";
CREATE SCHEMA pooler AUTHORIZATION CURRENT_USER;
REVOKE ALL ON SCHEMA pooler FROM PUBLIC;
GRANT USAGE ON SCHEMA pooler TO :"pooler_user";
CREATE FUNCTION pooler.lookup(role_name text, OUT usename name, OUT passwd text)
    RETURNS record LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
    FROM pg_authid
    WHERE rolname = role_name AND rolcanlogin AND NOT rolsuper AND NOT rolreplication
$$;
REVOKE ALL ON FUNCTION pooler.lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pooler.lookup(text) TO :"pooler_user";
SQL
        { pg_ctl --pgdata="$PGDATA" -m fast stop >/dev/null; fail "creating the pooler role failed"; }
fi
if [ -n "${REPLIKIT_ARCHIVE_INIT_COMMAND:-}" ]; then
    log "preparing the WAL archive"
    REPLIKIT_INIT_SOCKET_DIR=$workdir bash -c "$REPLIKIT_ARCHIVE_INIT_COMMAND" ||
        { pg_ctl --pgdata="$PGDATA" -m fast stop >/dev/null; fail "preparing the WAL archive failed"; }
fi
pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop >/dev/null
touch "$marker"
log "initialised (sync=$sync_mode)"
