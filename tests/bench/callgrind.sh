#!/bin/bash
# User-space instructions per keep-alive mTLS request through the sidecar (docs/performance.md,
# "What changed the figures"): the sidecar on one worker under valgrind --tool=callgrind, in front
# of bench-upstream, driven by loadgen on one connection for a short and a long run. Instructions
# per request = (Ir of the long run - Ir of the short) / (its requests - the short run's): start-up
# and the one handshake cancel out. Instruction counts do not depend on the machine's load, so two
# builds measured one after the other compare to a fraction of a percent.
#   tests/bench/callgrind.sh BUILD CERTS [SHORT_SECONDS] [LONG_SECONDS]
# CERTS: a directory deploy/make-certs.sh filled (server, client and CA). KEEP=FILE keeps the long
# run's profile there (for callgrind_annotate).
set -euo pipefail
B=$1; C=$2; SHORT=${3:-1.5}; LONG=${4:-6}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

UP=$(free_port)
"$B/tests/bench/bench-upstream" "$UP" >/dev/null 2>&1 &
PIDS+=($!)

# One run: prints "requests instructions".
run() {
  local secs=$1 port adm spid out ir
  port=$(free_port); adm=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$secs" "$B/sidecar/sidecar" \
    --listen 127.0.0.1:"$port" --upstream 127.0.0.1:"$UP" --admin-listen 127.0.0.1:"$adm" \
    --tls-cert "$C/server.pem" --tls-key "$C/server.key" --tls-client-ca "$C/ca.pem" \
    --workers 1 --log-level error >"$WORK/sidecar.$secs.log" 2>&1 &
  spid=$!
  PIDS+=("$spid")
  for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$adm/admin/ping" && break; sleep 0.2; done
  out=$("$B/tests/bench/loadgen" --target 127.0.0.1:"$port" --tls --cert "$C/client.pem" \
    --key "$C/client.key" --ca "$C/ca.pem" -c 1 -d "$secs" 2>&1 | tail -1)
  kill -INT "$spid"
  wait "$spid" 2>/dev/null || true
  ir=$(grep -m1 '^summary:' "$WORK/cg.$secs" | awk '{print $2}')
  echo "$(echo "$out" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["requests"])') $ir"
}

read -r n1 i1 < <(run "$SHORT")
read -r n2 i2 < <(run "$LONG")
[[ -n ${KEEP:-} ]] && cp "$WORK/cg.$LONG" "$KEEP"
python3 - "$n1" "$i1" "$n2" "$i2" <<'EOF'
import sys
n1, i1, n2, i2 = map(int, sys.argv[1:])
print(f"short: {n1} requests, {i1} Ir; long: {n2} requests, {i2} Ir")
print(f"instructions per keep-alive request: {(i2 - i1) / (n2 - n1):.0f}")
EOF
