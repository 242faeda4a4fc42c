#!/usr/bin/env bash
# Make sure this host can run the compose stack: a Docker engine that answers and a compose
# (v2 plugin or Debian's v1). As root on Debian/Ubuntu it installs what is missing
# (docker.io and the distribution's compose) and starts dockerd itself when no service
# manager runs it (containers, CI machines), logging to .replikit/dockerd.log. As another
# user it installs nothing and says the one command to run.
#
# Exit status: 0 ready, 1 not possible here (the last line on stderr says why).
# Environment: REPLIKIT_DOCKERD_LOG (default .replikit/dockerd.log), REPLIKIT_DOCKERD_PIDFILE
# (default .replikit/dockerd.pid: written only when this script started dockerd).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'docker-host: %s\n' "$*" >&2; }
log=${REPLIKIT_DOCKERD_LOG:-.replikit/dockerd.log}
pidfile=${REPLIKIT_DOCKERD_PIDFILE:-.replikit/dockerd.pid}
root=false
[ "$(id -u)" = 0 ] && root=true

have_compose() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null
}

missing=()
command -v docker >/dev/null && command -v dockerd >/dev/null || missing+=(docker.io)
have_compose || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
    if $root && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        say "Docker is missing; as root run: apt-get install ${missing[*]}"
        exit 1
    fi
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! $root; then
    if [ -S /var/run/docker.sock ]; then
        say "the Docker engine does not let $(id -un) in; add the account to the docker group (as root: usermod -aG docker $(id -un)) and log in again"
    else
        say "no Docker engine is running; as root: systemctl start docker (or dockerd &)"
    fi
    exit 1
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    say "starting docker with systemctl"
    systemctl start docker
else
    mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
    say "starting dockerd (no service manager here); log: $log"
    # setsid: the engine outlives this script and the make that ran it.
    setsid dockerd >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
fi
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
say "the Docker engine did not answer within 30 s; see $log"
exit 1
