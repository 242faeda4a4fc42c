#!/usr/bin/env bash
# Make sure this host can run the compose stack: a Docker engine that answers and a compose
# (v2 plugin or Debian's v1). As root on Debian/Ubuntu it installs what is missing
# (docker.io and the distribution's compose) and starts dockerd itself when no service
# manager runs it (containers, CI machines), logging to .replikit/dockerd.log. As another
# user it installs nothing and says the one command to run.
#
# Exit status: 0 ready, 1 not possible here (the last line on stderr says why).
# Environment: REPLIKIT_DOCKERD_LOG (default .replikit/dockerd.log), REPLIKIT_DOCKERD_PIDFILE
# (default .replikit/dockerd.pid: written only when this script started dockerd),
# REPLIKIT_DOCKERD_WAIT (seconds a new engine has to answer, default 120: a first start on a
# busy 2-core machine took over 30 s). An engine this script started that does not answer in
# time is stopped again, so a failure leaves nothing running.
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
    started=$!
    echo "$started" >"$pidfile"
fi
wait_seconds=${REPLIKIT_DOCKERD_WAIT:-120}
[[ $wait_seconds =~ ^[1-9][0-9]*$ ]] || { say "REPLIKIT_DOCKERD_WAIT must be a number of seconds, not '$wait_seconds'"; exit 1; }
deadline=$((SECONDS + wait_seconds))
while [ "$SECONDS" -lt "$deadline" ]; do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    if [ -n "${started:-}" ] && ! kill -0 "$started" 2>/dev/null; then
        rm -f "$pidfile"
        say "dockerd exited at start; see $log"
        exit 1
    fi
    sleep 0.5
done
if [ -n "${started:-}" ]; then
    kill "$started" 2>/dev/null || true
    rm -f "$pidfile"
fi
say "the Docker engine did not answer within $wait_seconds s; see $log"
exit 1
