#!/usr/bin/env bash
# The benchmark: sidecar vs HAProxy vs nginx (and direct), in one run. Not part of CI's pass/fail
# beyond --smoke. Usage: tests/bench/run.sh [--smoke] [--seconds S] [--repeats N] [--idle N] [--only 1,2,...]
# [--generators loadgen,wrk]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/deploy/install-deps.sh" build run bench
# The distribution's services are not wanted running; the harness starts its own.
for svc in nginx haproxy; do
  if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
if [[ ! -x $build/tests/bench/loadgen || ! -x $build/sidecar/sidecar ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target sidecar pinghelp loadgen bench-upstream >/dev/null
exec python3 "$root/tests/bench/run.py" --build "$build" "$@"
