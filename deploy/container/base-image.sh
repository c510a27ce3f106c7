#!/usr/bin/env bash
# Makes the Dockerfile's base image, debian:12, available to the local container engine without a
# registry: when the engine already has it, nothing; else a pull (where a registry answers); else
# debootstrap a minimal bookworm from this machine's Debian mirror and import it.
#   deploy/container/base-image.sh            (CONTAINER_ENGINE=podman|docker, default: podman if present)
# DEBIAN_MIRROR overrides the mirror read from /etc/apt/sources.list*; SIDECAR_BASE_PULL=0 skips the
# pull attempt (offline machines: saves its timeout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=engine.sh
source "$here/engine.sh"

image=debian:12
if "${engine[@]}" image exists "$image" 2>/dev/null \
   || "${engine[@]}" image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if [[ ${SIDECAR_BASE_PULL:-1} != 0 ]] \
   && timeout 60 "${engine[@]}" pull -q "docker.io/library/$image" >/dev/null 2>&1; then
  "${engine[@]}" tag "docker.io/library/$image" "$image"
  exit 0
fi

# The first Debian (not security) mirror apt is configured with: one-line or deb822 format.
mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
             | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
             | grep -v -- '-security' | head -n1 || true)
fi
if [[ -z $mirror ]]; then
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -E '/debian/?$' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || "$here/../install-deps.sh" container
rootfs=$(mktemp -d /var/tmp/sidecar-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image.sh: debootstrap bookworm (minbase) from $mirror"
nice -n 10 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# As the official image: the archive and security sources, no caches, no apt lists.
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
SOURCES
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
tar -C "$rootfs" --numeric-owner -c . \
  | "${engine[@]}" import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "base-image.sh: imported $image"
