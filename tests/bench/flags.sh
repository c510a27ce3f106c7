#!/bin/bash
# The sidecar under one set of flags against another, alternating, at a fixed rate: latency
# percentiles (loadgen's open loop), the sidecar's CPU per request and its voluntary context
# switches per request (its sleeps in epoll_wait). One worker on CPU 0; loadgen and the upstream
# on CPU 1; 32 mTLS keep-alive connections, 5 s per round.
#   tests/bench/flags.sh BUILD CERTS RATE ROUNDS FLAGS...
# FLAGS: one quoted string per variant ('' for none); a variant may start with BIN=PATH to run
# another sidecar binary (an older build, say), e.g.
#   tests/bench/flags.sh build /tmp/certs 10000 3 '' '--busy-poll-us 50'
#   tests/bench/flags.sh build /tmp/certs 15000 3 'BIN=/tmp/old/sidecar --access-log /dev/null' '--access-log /dev/null'
# CERTS: a directory deploy/make-certs.sh filled (server, client and CA).
set -u
B=$1; C=$2; RATE=$3; ROUNDS=$4; shift 4
TCK=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
for VARIANT in "$@"; do
BIN="$B/sidecar/sidecar"; FLAGS=$VARIANT
if [[ $VARIANT == BIN=* ]]; then
  BIN=${VARIANT%% *}; BIN=${BIN#BIN=}
  FLAGS=${VARIANT#BIN=* }; [[ $FLAGS == BIN=* ]] && FLAGS=""
fi
PORT=$((30000 + RANDOM % 20000)); UP=$((PORT+1)); ADM=$((PORT+2))
taskset -c 1 "$B/tests/bench/bench-upstream" $UP > /dev/null 2>&1 &
UPID=$!
# shellcheck disable=SC2086  # FLAGS is a list of words
taskset -c 0 "$BIN" --listen 127.0.0.1:$PORT --upstream 127.0.0.1:$UP \
  --admin-listen 127.0.0.1:$ADM --tls-cert "$C/server.pem" --tls-key "$C/server.key" \
  --tls-client-ca "$C/ca.pem" --workers 1 --log-level warn $FLAGS > /dev/null 2>&1 &
SPID=$!
for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$ADM/admin/ping && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
switches() { cat /proc/$SPID/task/*/status | awk '/^voluntary_ctxt_switches/ {s+=$2} END {print s}'; }
C0=$(cpu); S0=$(switches)
OUT=$(taskset -c 1 "$B/tests/bench/loadgen" --target 127.0.0.1:$PORT --tls --cert "$C/client.pem" \
  --key "$C/client.key" --ca "$C/ca.pem" -c 32 -d 5 -R "$RATE" 2>&1)
C1=$(cpu); S1=$(switches)
kill $SPID $UPID; wait 2>/dev/null
echo "$OUT" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read().splitlines()[-1])
flags, cpu, switches, tck, rnd = sys.argv[1:6]
n = max(1, j["requests"])
rps = j["rps"]
p = " ".join(f"{k[:-3]}={j[k]}" for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"])
print(f"round {rnd} flags=[{flags}] req/s={rps:.0f} {p} (us) "
      f"cpu_us/req={int(cpu) * 1e6 / int(tck) / n:.1f} sleeps/req={int(switches) / n:.2f}")
' "$VARIANT" $((C1 - C0)) $((S1 - S0)) "$TCK" "$round"
done
done
