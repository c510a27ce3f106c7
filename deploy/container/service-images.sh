#!/usr/bin/env bash
# The images the compose stack and the Kubernetes manifests name besides the sidecar's:
# zookeeper:3.8 and prom/prometheus:v2.42.0. Where the engine has them, nothing; where a registry
# answers, pulled; else built from Debian 12's packages (zookeeper/, prometheus/ beside this file,
# on the debian:12 that base-image.sh makes), same versions, same settings and entrypoints.
# Usage: deploy/container/service-images.sh [zookeeper] [prometheus]   (default: both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=engine.sh
source "$here/engine.sh"

declare -A images=([zookeeper]=zookeeper:3.8 [prometheus]=prom/prometheus:v2.42.0)
build=("${engine[@]}" build)
[[ $engine_name == podman ]] && build+=(--format docker)
for name in "${@:-zookeeper prometheus}"; do
  for one in $name; do
    image=${images[$one]:?service-images.sh: unknown image $one}
    if "${engine[@]}" image inspect "$image" >/dev/null 2>&1; then
      continue
    fi
    if [[ ${SIDECAR_BASE_PULL:-1} != 0 ]] \
       && timeout 120 "${engine[@]}" pull -q "docker.io/$( [[ $image == */* ]] || echo library/)$image" >/dev/null 2>&1; then
      continue
    fi
    "$here/base-image.sh"
    echo "service-images.sh: building $image from Debian packages"
    nice -n 10 "${build[@]}" -q -t "$image" "$here/$one" >/dev/null
  done
done
