#!/usr/bin/env bash
# Builds the sidecar image with the local engine (podman or docker), offline when need be.
#   deploy/container/build-image.sh [--tag sidecar:dev]
#       the shipped Dockerfile, from source, on debian:12 (made by base-image.sh when no registry
#       answers); on 2 cores this compiles for several minutes.
#   deploy/container/build-image.sh --prebuilt BUILD_DIR [--tag sidecar:dev]
#       the same runtime stage, filled from binaries already built on this Debian 12 machine
#       (BUILD_DIR/sidecar/{sidecar,pinghelp}): seconds. The suite uses this; the image differs
#       only in how its two binaries were compiled (the build tree's type, e.g. RelWithDebInfo).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/deploy/container
# shellcheck source=engine.sh
source "$here/engine.sh"

tag=sidecar:dev
prebuilt=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --prebuilt) prebuilt=${2:?--prebuilt needs a build directory}; shift 2 ;;
    *) echo "build-image.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
build=("${engine[@]}" build)
# podman writes OCI images by default, which have no HEALTHCHECK; the Docker format keeps it.
[[ $engine_name == podman ]] && build+=(--format docker)

if [[ -z $prebuilt ]]; then
  "$here/base-image.sh"
  exec nice -n 10 "${build[@]}" -t "$tag" "$root"
fi

prebuilt=$(cd "$prebuilt" && pwd)
for bin in sidecar pinghelp; do
  [[ -x $prebuilt/sidecar/$bin ]] || { echo "build-image.sh: $prebuilt/sidecar/$bin not built" >&2; exit 2; }
done
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
help_dest=$(sed -n 's/^PINGHELP_DEFAULT_HELP_DIR:PATH=//p' "$prebuilt/CMakeCache.txt")
"$here/rootfs.sh" "$context/rootfs" "$root/proto/help" "${help_dest:-/usr/local/share/pinghelp/help}" \
  "$prebuilt/sidecar/sidecar" "$prebuilt/sidecar/pinghelp"
# The Dockerfile's own runtime stage (from its last FROM on), after a stage named like its build
# stage that holds the root filesystem made here: the image's settings are written once.
{
  echo "FROM scratch AS build"
  echo "COPY rootfs/ /rootfs/"
  awk '/^FROM /{ last = NR } { line[NR] = $0 } END { for (i = last; i <= NR; i++) print line[i] }' "$root/Dockerfile"
} > "$context/Dockerfile"
"${build[@]}" -q -t "$tag" -f "$context/Dockerfile" "$context" >/dev/null
echo "build-image.sh: $tag from $prebuilt"
