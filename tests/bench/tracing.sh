#!/bin/bash
# What tracing costs the data path: the same keep-alive mTLS load (loadgen, closed loop, 32
# connections, 5 s per variant) through the sidecar with tracing off (no --zipkin-url), on at a
# sample rate of 1 % and of 100 % to a collector that accepts, and at 100 % to collectors that
# answer 500, hang past the reporter's 2 s, or are not there. Variants alternate within each round.
# One worker on CPU 0 (its reporter thread too); loadgen, the upstream and the collectors on CPU 1.
# Per variant: req/s, latency percentiles, the sidecar's CPU per request, and its span counters
# (sidecar_trace_spans_total by result, sidecar_trace_post_failures_total) at the end.
#   tests/bench/tracing.sh BUILD CERTS [ROUNDS] [SECONDS]
# CERTS: a directory deploy/make-certs.sh filled (server, client and CA).
set -u
B=$1; C=$2; ROUNDS=${3:-1}; SECS=${4:-5}
TCK=$(getconf CLK_TCK)
PIDS=()
RESULTS=$(mktemp)
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -f "$RESULTS"' EXIT

# A collector that takes POST /api/v2/spans and answers 202 (accept), 500 (fail), or after 10 s
# (slow); it reads each body whole and does nothing with it.
collector() {
  taskset -c 1 python3 - "$1" "$2" <<'EOF' &
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if mode == "slow":
            time.sleep(10)
        self.send_response(500 if mode == "fail" else 202)
        self.send_header("Content-Length", "0")
        self.end_headers()
s = ThreadingHTTPServer(("127.0.0.1", port), H)
s.daemon_threads = True
s.serve_forever()
EOF
  PIDS+=($!)
}
# Ports the kernel has free now (the machine may be running other tests on random ports).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OK=$(free_port); FAIL=$(free_port); SLOW=$(free_port); DOWN=$(free_port)  # nothing listens on DOWN
collector accept "$OK"; collector fail "$FAIL"; collector slow "$SLOW"
url() { echo "http://127.0.0.1:$1/api/v2/spans"; }
sleep 1

declare -a NAMES=("off" "on 1%" "on 100%" "100% collector 500" "100% collector slow"
                  "100% collector down")
declare -a FLAGS=(""
  "--zipkin-url $(url "$OK") --trace-sample-rate 0.01"
  "--zipkin-url $(url "$OK") --trace-sample-rate 1"
  "--zipkin-url $(url "$FAIL") --trace-sample-rate 1"
  "--zipkin-url $(url "$SLOW") --trace-sample-rate 1"
  "--zipkin-url $(url "$DOWN") --trace-sample-rate 1")

for round in $(seq 1 "$ROUNDS"); do
for i in "${!NAMES[@]}"; do
PORT=$(free_port); UP=$(free_port); ADM=$(free_port)
taskset -c 1 "$B/tests/bench/bench-upstream" $UP > /dev/null 2>&1 &
UPID=$!
# shellcheck disable=SC2086  # FLAGS is a list of words
taskset -c 0 "$B/sidecar/sidecar" --listen 127.0.0.1:$PORT --upstream 127.0.0.1:$UP \
  --admin-listen 127.0.0.1:$ADM --tls-cert "$C/server.pem" --tls-key "$C/server.key" \
  --tls-client-ca "$C/ca.pem" --workers 1 --log-level error ${FLAGS[$i]} > /dev/null 2>&1 &
SPID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$ADM/admin/ping && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
C0=$(cpu)
OUT=$(taskset -c 1 "$B/tests/bench/loadgen" --target 127.0.0.1:$PORT --tls --cert "$C/client.pem" \
  --key "$C/client.key" --ca "$C/ca.pem" -c 32 -d "$SECS" 2>&1)
C1=$(cpu)
sleep 1.2  # the reporter's next round: what was queued is posted (or failed) by now
METRICS=$(curl -s http://127.0.0.1:$ADM/metrics | grep -E '^sidecar_trace_(spans_total|post_failures_total)')
kill $SPID $UPID; wait $SPID $UPID 2>/dev/null
echo "$OUT" | python3 -c '
import json, re, sys
j = json.loads(sys.stdin.read().splitlines()[-1])
name, cpu, tck, rnd, metrics, results = sys.argv[1:7]
n = max(1, j["requests"])
p = " ".join(f"{k[:-3]}={j[k]}" for k in ["p50_us", "p99_us", "p999_us"])
spans = {m.group(1): int(float(m.group(2)))
         for m in re.finditer(r"sidecar_trace_spans_total\{result=\"(\w+)\"\} (\S+)", metrics)}
fails = re.search(r"sidecar_trace_post_failures_total (\S+)", metrics)
spans = " ".join(f"{k}={v}" for k, v in sorted(spans.items()) if v) or "-"
rps = j["rps"]
print(f"round {rnd} {name:<20} req/s={rps:>6.0f} {p} (us) "
      f"cpu_us/req={int(cpu) * 1e6 / int(tck) / n:.1f} spans: {spans}"
      + (f" post_failures={int(float(fails.group(1)))}" if fails and float(fails.group(1)) else ""))
with open(results, "a") as f:
    f.write(json.dumps({"name": name, "rps": rps, "p99": j["p99_us"],
                        "cpu": int(cpu) * 1e6 / int(tck) / n}) + "\n")
' "${NAMES[$i]}" $((C1 - C0)) "$TCK" "$round" "$METRICS" "$RESULTS"
done
done
# Side by side: the median of the rounds for each variant, and req/s against tracing off.
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
names = list(dict.fromkeys(r["name"] for r in runs))
med = {n: {k: statistics.median(r[k] for r in runs if r["name"] == n) for k in ("rps", "p99", "cpu")}
       for n in names}
print(f"median of {len(runs) // len(names)} round(s):")
print(f"{'variant':<20} {'req/s':>7} {'vs off':>7} {'p99 us':>7} {'cpu us/req':>10}")
for n in names:
    m = med[n]
    print(f"{n:<20} {m['rps']:>7.0f} {m['rps'] / med[names[0]]['rps']:>7.2f} {m['p99']:>7.0f} {m['cpu']:>10.1f}")
EOF
