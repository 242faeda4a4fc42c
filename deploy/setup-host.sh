#!/usr/bin/env bash
# Prepare this machine for replikit: the system packages it needs (PostgreSQL server,
# python3-venv, shellcheck, docker-compose), uv, and .venv with the project and its dev extras from uv.lock.
# Safe to run again: it installs only what is missing. As an ordinary user it installs uv and
# .venv, names the command that installs the rest as root, and exits 1 while something is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never

# The system interpreter, not one under a private home: anything run as the postgres
# account must be able to execute it.
python=${REPLIKIT_PYTHON:-$(command -v /usr/bin/python3 || command -v python3 || true)}

have_pg_server() {
    local dir
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then return 0; fi
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
    for dir in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin; do
        if [ -x "$dir/initdb" ]; then return 0; fi
    done
    command -v initdb >/dev/null
}

missing=()
have_pg_server || missing+=(postgresql)
if [ -z "$python" ]; then
    missing+=(python3)
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
command -v shellcheck >/dev/null || missing+=(shellcheck)
# The compose files are checked without a Docker engine by Debian's docker-compose (v1).
command -v docker-compose >/dev/null || missing+=(docker-compose)
# etcd for `cluster up --manager patroni`; optional, so only root installs it here.
if [ "$(id -u)" = 0 ] && [ -z "${REPLIKIT_SKIP_PATRONI:-}" ]; then
    command -v etcd >/dev/null || missing+=(etcd-server)
fi
# pgBackRest for WAL archiving, `replikit backup` and `replikit restore` on local clusters;
# optional (clusters built without --archive need none), so only root installs it here.
if [ "$(id -u)" = 0 ]; then
    command -v pgbackrest >/dev/null || missing+=(pgbackrest)
fi

# What needs root is installed here only when we are root; otherwise (an ordinary user, or a
# system without apt-get) everything that needs no privileges is still done, then the one
# command to run as root is printed and setup fails. It never calls sudo behind your back.
packages_needed=""
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    elif command -v apt-get >/dev/null; then
        packages_needed="replikit needs ${missing[*]}, which only root can install; as root"
        packages_needed+=" (e.g. with sudo) run: apt-get install --no-install-recommends ${missing[*]}"
    else
        packages_needed="replikit needs ${missing[*]}; install them with your package manager"
    fi
fi
python=${REPLIKIT_PYTHON:-$(command -v /usr/bin/python3 || command -v python3 || true)}

# uv and .venv need no privileges: on PATH already, or installed into .tools/ with the system
# python's venv module (python3-venv).
uv=$(command -v uv || true)
if [ -z "$uv" ] && [ -x .tools/bin/uv ]; then
    uv=.tools/bin/uv
fi
if [ -z "$uv" ] && [ -n "$python" ] && "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "setup: installing uv into .tools/" >&2
    "$python" -m venv .tools
    .tools/bin/pip install --quiet uv
    uv=.tools/bin/uv
fi
if [ -n "$uv" ] && [ -n "$python" ]; then
    "$uv" sync --locked --extra dev --python "$python" --quiet
elif [ -z "$packages_needed" ]; then
    packages_needed="uv could not be installed; install python3-venv or put uv on PATH"
fi

# promtool checks and unit-tests the Prometheus alert rules (tests/unit/test_alert_rules.py).
# Only that one program is taken out of Debian's prometheus package, into .tools/bin: installing
# the package would also start a Prometheus server on this host.
if ! command -v promtool >/dev/null && [ ! -x .tools/bin/promtool ]; then
    if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
        echo "setup: extracting promtool from Debian's prometheus package into .tools/bin" >&2
        deb_dir=$(mktemp -d)
        if [ "$(id -u)" = 0 ] && [ "${#missing[@]}" = 0 ]; then
            apt-get update -qq  # the package lists a download needs (done above otherwise)
        fi
        if (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null) \
            && dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/root"; then
            mkdir -p .tools/bin
            install -m 0755 "$deb_dir/root/usr/bin/promtool" .tools/bin/promtool
        fi
        rm -rf "$deb_dir"
    fi
    if [ ! -x .tools/bin/promtool ] && [ -z "$packages_needed" ]; then
        packages_needed="promtool could not be extracted; put it on PATH (Debian's prometheus"
        packages_needed+=" package has it)"
    fi
fi

# The Patroni virtualenv for `replikit cluster up --manager patroni` (etcd is installed above);
# as root only, since it writes under /opt. `cluster up --manager patroni` runs it when missing.
if [ "$(id -u)" = 0 ] && [ -z "${REPLIKIT_SKIP_PATRONI:-}" ]; then
    "$BASH" deploy/install-patroni.sh
fi

if [ -n "$packages_needed" ]; then
    echo "setup: $packages_needed (then run make setup again)." >&2
    exit 1
fi
