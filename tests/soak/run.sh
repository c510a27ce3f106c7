#!/usr/bin/env bash
# Soak with faults: mixed load through the sidecar while the local service is killed and restarted
# every 30 s and ZooKeeper every 90 s. 10 minutes by default; SOAK_SECONDS=60 is the CI version.
# usage: tests/soak/run.sh [--seconds N] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/soak.py" --seconds "${SOAK_SECONDS:-600}" "$@"
