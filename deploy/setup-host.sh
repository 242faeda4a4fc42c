#!/usr/bin/env bash
# Prepare this machine for replikit: the system packages it needs (PostgreSQL server,
# python3-venv, shellcheck, docker-compose), uv, and .venv with the project and its dev extras from uv.lock.
# Safe to run again: it installs only what is missing.
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

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "setup: replikit needs ${missing[*]}; install them with your package manager" \
            "(on Debian, as root: apt-get install ${missing[*]})." >&2
        exit 1
    fi
fi
python=${REPLIKIT_PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}

uv=$(command -v uv || true)
if [ -z "$uv" ]; then
    if [ ! -x .tools/bin/uv ]; then
        echo "setup: installing uv into .tools/" >&2
        "$python" -m venv .tools
        .tools/bin/pip install --quiet uv
    fi
    uv=.tools/bin/uv
fi

"$uv" sync --locked --extra dev --python "$python" --quiet
