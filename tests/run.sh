#!/usr/bin/env bash
# The whole test suite: installs what is missing, then
#   1. checks the C++ sources' format (tests/check-format.sh), builds with warnings as errors and
#      runs every test (ctest);
#   2. builds with AddressSanitizer + UndefinedBehaviorSanitizer and runs every test again;
#   3. builds with ThreadSanitizer and runs the multi-worker and ZooKeeper tests;
#   4. builds the libFuzzer targets with clang, replays their corpora and fuzzes each for a while;
#   5. container: makes debian:12 offline (debootstrap) and the ZooKeeper and Prometheus images
#      from Debian packages, then runs the `container` tests (the image under podman, compose,
#      the pod, the manifests against the Kubernetes schema) on the shipped Dockerfile's image,
#      built from source (about 7 minutes on 2 cores); SIDECAR_IMAGE_FROM_SOURCE=0 tests an image
#      assembled in seconds from this build's binaries instead.
# First, for each selected stage, deploy/install-deps.sh --stage installs what that stage calls
# and is missing (its one list of programs, modules and files per stage), then checks each is
# there: a missing one that cannot be installed stops the run before any stage, in one line
# naming it, its package and the stage (exit 2). SIDECAR_NO_INSTALL=1 only checks.
# Any sanitizer report fails the run. Arguments go to every ctest call (e.g. -R proxy).
# SIDECAR_STAGES picks stages (default "plain asan tsan fuzz container"); FUZZ_SECONDS (default
# 60) sets the fresh fuzzing time per target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
stages=${SIDECAR_STAGES:-plain asan tsan fuzz container}
jobs=$(nproc)

has() { [[ " $stages " == *" $1 "* ]]; }

check=()
[[ ${SIDECAR_NO_INSTALL:-0} == 1 ]] && check=(--check)
for stage in $stages; do
  "$root/deploy/install-deps.sh" "${check[@]}" --stage "$stage"
done

# Runs ctest in $1 with sanitizer logs going to $1/sanitizer; fails on any report.
sanitized_ctest() {
  local dir=$1
  shift
  rm -rf "$dir/sanitizer" && mkdir -p "$dir/sanitizer"
  local status=0
  (cd "$dir" && SIDECAR_SANITIZED=1 \
    ASAN_OPTIONS="log_path=$dir/sanitizer/asan:detect_leaks=1:abort_on_error=1" \
    UBSAN_OPTIONS="log_path=$dir/sanitizer/ubsan:print_stacktrace=1:halt_on_error=1" \
    TSAN_OPTIONS="log_path=$dir/sanitizer/tsan:halt_on_error=1:second_deadlock_stack=1" \
    ctest --output-on-failure -j2 --timeout 1200 "$@") || status=$?
  if compgen -G "$dir/sanitizer/*" >/dev/null; then
    echo "sanitizer reports in $dir/sanitizer:" >&2
    head -c 20000 "$dir"/sanitizer/* >&2
    status=1
  fi
  return $status
}

if has plain; then
  "$root/tests/check-format.sh"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON
  cmake --build "$build" -j"$jobs"
  (cd "$build" && ctest --output-on-failure -j2 --timeout 900 -LE container "$@")
fi

if has asan; then
  cmake -S "$root" -B "$build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON \
    -DSIDECAR_SANITIZE=address,undefined
  cmake --build "$build-asan" -j"$jobs"
  # The benchmark and fleet smoke runs exercise nothing a sanitizer would see that the proxy and
  # ZooKeeper tests miss.
  sanitized_ctest "$build-asan" -E '(bench|fleet)\.smoke' -LE container "$@"
fi

if has tsan; then
  cmake -S "$root" -B "$build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON \
    -DSIDECAR_SANITIZE=thread
  cmake --build "$build-tsan" -j"$jobs" --target sidecar pinghelp zkctl loadgen
  # Several workers, the control thread, the ZooKeeper client's threads and the access log's.
  sanitized_ctest "$build-tsan" -R 'integration\.(proxy|abuse|lifecycle|announce|metrics|outbound|http2)$' "$@"
fi

if has fuzz; then
  fuzzers="request_head chunked_body serverset address flags help_file thrift_frame ttwitter_header"
  CC=clang CXX=clang++ cmake -S "$root" -B "$build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSIDECAR_FUZZ=ON -DSIDECAR_SANITIZE=address,undefined -DSIDECAR_WERROR=OFF
  cmake --build "$build-fuzz" -j"$jobs" --target $(printf 'fuzz_%s ' $fuzzers)
  (cd "$build-fuzz" && FUZZ_SECONDS=${FUZZ_SECONDS:-60} ctest --output-on-failure -j2 "$@")
fi

if has container; then
  # The tests' own tools (sidecar resolve, probe) come from the plain build: built here when the
  # plain stage did not run.
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON
  cmake --build "$build" -j"$jobs" --target sidecar pinghelp
  "$root/deploy/container/base-image.sh"
  "$root/deploy/container/service-images.sh"
  image_env=()
  if [[ ${SIDECAR_IMAGE_FROM_SOURCE:-1} == 1 ]]; then
    "$root/deploy/container/build-image.sh" --tag sidecar:dev
    image_env=(SIDECAR_IMAGE=sidecar:dev)
  fi
  (cd "$build" && env "${image_env[@]}" ctest --output-on-failure --timeout 1200 -L container "$@")
fi
