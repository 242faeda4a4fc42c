#!/usr/bin/env bash
# Install what `replikit cluster up --manager patroni` runs: Debian's etcd-server (the etcd
# binary; no service is started, replikit runs its own members) and Patroni from PyPI with its
# etcd3 extra, in a virtualenv made from the system python3 under a directory every account can
# read, because the agents run as the postgres account, which cannot execute anything under a
# private home such as /root.
#
# Environment:
#   REPLIKIT_PATRONI_VENV     where the virtualenv goes (default /opt/replikit/patroni)
#   REPLIKIT_PATRONI_VERSION  the Patroni release (default 4.1.5)
# Safe to run again: it installs only what is missing. Needs root for etcd-server only.
set -euo pipefail
venv=${REPLIKIT_PATRONI_VENV:-/opt/replikit/patroni}
version=${REPLIKIT_PATRONI_VERSION:-4.1.5}

if ! command -v etcd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install-patroni: installing etcd-server with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            etcd-server >/dev/null
    else
        echo "install-patroni: etcd is missing; as root run: apt-get install --no-install-recommends etcd-server" >&2
        exit 1
    fi
fi

if ! "$venv/bin/patroni" --version 2>/dev/null | grep -qx "patroni $version"; then
    echo "install-patroni: installing Patroni $version into $venv" >&2
    mkdir -p "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "patroni[etcd3,psycopg2-binary]==$version"
    chmod -R a+rX "$venv"
fi
