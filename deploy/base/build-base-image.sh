#!/usr/bin/env bash
# Make the one Debian base every replikit image is built FROM, when it is not there yet.
#
# The images say FROM ${REPLIKIT_BASE_IMAGE:-debian:13.8-slim}, the official slim image of a
# pinned point release. Where a registry answers, that image is pulled. Where none does
# (air-gapped hosts, these test machines), the same root file system is made from the Debian
# archive with mmdebstrap (minbase, no recommends, no docs, man pages or locales, like the
# official slim images) and imported under the same name, so the Dockerfiles never change.
#
# Environment:
#   REPLIKIT_BASE_IMAGE   image name (default debian:13.8-slim)
#   REPLIKIT_DEBIAN_SUITE suite to bootstrap (default trixie)
#   REPLIKIT_DEBIAN_MIRROR (default http://deb.debian.org/debian)
#   REPLIKIT_BASE_REBUILD=1 makes it again even when the image exists
# Needs root (or a user namespace for mmdebstrap --mode=unshare) only when it has to bootstrap.
set -euo pipefail

image=${REPLIKIT_BASE_IMAGE:-debian:13.8-slim}
suite=${REPLIKIT_DEBIAN_SUITE:-trixie}
mirror=${REPLIKIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${mirror%/debian}/debian-security

say() { printf 'base-image: %s\n' "$*" >&2; }

if [ "${REPLIKIT_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    say "$image is present"
    exit 0
fi
if [ "${REPLIKIT_BASE_REBUILD:-0}" != 1 ] && docker pull --quiet "$image" >/dev/null 2>&1; then
    say "pulled $image"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing mmdebstrap with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            mmdebstrap >/dev/null
    else
        say "error: $image cannot be pulled and mmdebstrap is missing; as root: apt-get install mmdebstrap"
        exit 1
    fi
fi

# The pin names a point release; say so when the archive has moved past it.
pinned=${image#*:}
pinned=${pinned%%-*}
archive=$(curl -fsS --max-time 20 "$mirror/dists/$suite/Release" 2>/dev/null |
    sed -n 's/^Version: *//p' || true)
if [ -n "$archive" ] && [ "$archive" != "$pinned" ]; then
    say "note: the archive's $suite is at $archive, the pin says $pinned; the image is made from $archive"
fi

mode=root
[ "$(id -u)" = 0 ] || mode=unshare
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
# The hook's $1 (the new root) is expanded by mmdebstrap, not by this shell.
# shellcheck disable=SC2016
clean_hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log'
say "bootstrapping $suite from $mirror as $image (about half a minute)"
mmdebstrap --mode="$mode" --variant=minbase --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="$clean_hook" \
    "$suite" "$workdir/rootfs.tar" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security_mirror $suite-security main" \
    >"$workdir/mmdebstrap.log" 2>&1 ||
    { tail -n 20 "$workdir/mmdebstrap.log" >&2; say "error: mmdebstrap failed"; exit 1; }
docker import --change 'CMD ["bash"]' "$workdir/rootfs.tar" "$image" >/dev/null
say "made $image from the Debian archive ($suite ${archive:-?})"
