#!/usr/bin/env bash
# Entry point of the HA variant's PostgreSQL containers (deploy/compose/ha.yml): write the
# Patroni agent's configuration from the container's environment with the same generator the
# local Patroni manager uses (patroni_config.py, copied into the image), then run the agent in
# the foreground. The agent starts PostgreSQL: on the first node to win the bootstrap race it
# runs patroni-bootstrap.sh (init-primary.sh), on the others pg_basebackup from the leader; a
# former leader is rewound with pg_rewind before it follows the new one.
#
# Environment: what patroni_config.py's container_agent() documents (REPLIKIT_NODE_NAME,
# REPLIKIT_PEER_ADDRESS, REPLIKIT_ETCD_HOSTS, PGDATA, the passwords, REPLIKIT_PATRONI_*),
# plus what init-primary.sh takes. REPLIKIT_PATRONI_CONFIG_GENERATOR overrides the
# generator's path (default /usr/local/lib/replikit/patroni_config.py).
set -euo pipefail
generator=${REPLIKIT_PATRONI_CONFIG_GENERATOR:-/usr/local/lib/replikit/patroni_config.py}
config_dir=${REPLIKIT_SOCKET_DIR:-/var/run/postgresql}
config="$config_dir/patroni.yml"
mkdir -p "$config_dir"
python3 "$generator" "$config"
# The file is 0600 (it holds passwords). Patroni as PID 1 reaps its children itself.
exec patroni "$config"
