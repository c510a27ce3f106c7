#!/bin/bash
# HTTP/2 over mTLS: the sidecar against HAProxy and nginx, side by side in one run (issue 26's
# benchmark). Not part of CI's pass/fail.
#   tests/bench/h2.sh [BUILD] [SECONDS] [IDLE] [ROUNDS]
# BUILD: the build directory (default: build), with sidecar/sidecar and tests/bench/bench-upstream.
# SECONDS: each h2load round (3); IDLE: idle HTTP/2 connections held for the memory figures
# (1000); ROUNDS: throughput rounds, the peers alternating in each (1; the table has medians).
#
# 1. Throughput and latency: h2load (Debian's nghttp2-client, given a client certificate by
#    wrk_cert.c preloaded: h2load has no flag for it) -c 16 -m 10 -t 1 for SECONDS against each
#    peer, GET /ping, HTTP/2 over TLS 1.3 with ALPN h2; each peer forwards over HTTP/1.1 to the
#    same bench-upstream. req/s from h2load, p50/p99 from its per-request log (--log-file), the
#    peer's CPU per request from /proc/PID/stat around the round.
# 2. Memory: the peers started again with a local service that never answers
#    (h2_slow_upstream.py). RSS at rest; RSS growth per idle HTTP/2 connection (h2_hold.py opens
#    IDLE: TLS, preface, SETTINGS exchanged, nothing else); then 10 GET streams on each of 100 of
#    them, held open at the local service: RSS growth per open stream (each stream also holds its
#    own HTTP/1.1 connection to the local service, in all three peers).
#
# The peers, each with one worker, thread or process, all pinned to CPU 0:
#   sidecar  --workers 1 --upstream-protocol http1 (access log off, as in run.py)
#   HAProxy  nbthread 1; bind ... ssl crt ... ca-file ... verify required alpn h2,http/1.1;
#            HTTP/1.1 backend, http-reuse always
#   nginx    worker_processes 1, master_process off; listen ... ssl http2; ssl_verify_client on;
#            proxy_pass HTTP/1.1 to an upstream block with keepalive 64, buffering off
# h2load, bench-upstream, h2_hold.py and h2_slow_upstream.py run on CPU 1.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
B=${1:-$root/build}; SECS=${2:-3}; IDLE=${3:-1000}; ROUNDS=${4:-1}
CONNS=${H2_CONNS:-16}; STREAMS=${H2_STREAMS:-10}   # h2load -c, -m (environment: H2_CONNS, H2_STREAMS)
SCONNS=100; SPER=10            # held streams: SPER on each of SCONNS connections
for tool in h2load haproxy nginx taskset cc; do
  command -v $tool > /dev/null || { echo "h2.sh: $tool missing (deploy/install-deps.sh bench)" >&2; exit 2; }
done
[[ -x $B/sidecar/sidecar && -x $B/tests/bench/bench-upstream ]] || {
  echo "h2.sh: build sidecar and bench-upstream in $B first" >&2; exit 2; }
T=$(mktemp -d /tmp/h2bench.XXXXXX)
PIDS=()
HOLD_PID=
cleanup() {
  [[ -n $HOLD_PID ]] && kill "$HOLD_PID" 2> /dev/null
  [[ ${#PIDS[@]} -gt 0 ]] && kill "${PIDS[@]}" 2> /dev/null
  wait 2> /dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"
TCK=$(getconf CLK_TCK)
"$root/deploy/make-certs.sh" "$T/certs" > /dev/null || exit 1
CE=$T/certs
cat "$CE/server.pem" "$CE/server.key" > "$CE/server-combined.pem"
cc -shared -fPIC -O2 -o "$T/cert.so" "$root/tests/bench/wrk_cert.c" -lssl -lcrypto -ldl || exit 1

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {  # PORT PID
  for _ in $(seq 1 200); do
    kill -0 "$2" 2> /dev/null || { echo "h2.sh: process $2 for port $1 ended" >&2; exit 1; }
    (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
    sleep 0.05
  done
  echo "h2.sh: nothing on port $1" >&2; exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

declare -A PORT PID
NAMES=(sidecar haproxy nginx)
# start_peers UPSTREAM_PORT TAG [grpc]: the three peers, each on its own free loopback port; with
# grpc, each forwards over h2c (sidecar --upstream-protocol h2c, HAProxy proto h2, nginx grpc_pass).
start_peers() {
  local up=$1 tag=$2 mode=${3:-http1} p
  local sproto=http1 hproto="" nloc="proxy_pass http://local;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";" nset=proxy_set_header
  if [[ $mode == grpc ]]; then sproto=h2c; hproto="proto h2"; nloc="grpc_pass grpc://local;"; nset=grpc_set_header; fi
  p=$(free_port)
  taskset -c 0 "$B/sidecar/sidecar" --listen "127.0.0.1:$p" --upstream "127.0.0.1:$up" \
    --admin-listen 127.0.0.1:"$(free_port)" --workers 1 --upstream-protocol $sproto \
    --tls-cert "$CE/server.pem" --tls-key "$CE/server.key" --tls-client-ca "$CE/ca.pem" \
    --log-level warn --max-body-size 0 > "$T/sidecar-$tag.log" 2>&1 &
  PORT[sidecar]=$p; PID[sidecar]=$!; PIDS+=($!)

  p=$(free_port)
  cat > "$T/haproxy-$tag.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always
frontend mtls
  bind 127.0.0.1:$p ssl crt $CE/server-combined.pem ca-file $CE/ca.pem verify required alpn h2,http/1.1
  maxconn 8000
  option forwardfor
  http-request del-header X-Forwarded-Client-Cert
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_der,sha2(256),hex];Subject=\"%[ssl_c_s_dn]\""
  http-request set-header X-Forwarded-Proto https
  default_backend local
backend local
  server up 127.0.0.1:$up maxconn 2000 $hproto
EOF
  taskset -c 0 haproxy -f "$T/haproxy-$tag.cfg" -db > "$T/haproxy-$tag.log" 2>&1 &
  PORT[haproxy]=$p; PID[haproxy]=$!; PIDS+=($!)

  p=$(free_port)
  mkdir -p "$T/nginx-$tag"
  cat > "$T/nginx-$tag.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $T/nginx-$tag/nginx.pid;
error_log $T/nginx-$tag/error.log warn;
worker_rlimit_nofile 19000;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $T/nginx-$tag/body;
  proxy_temp_path $T/nginx-$tag/proxy;
  upstream local { server 127.0.0.1:$up; keepalive 64; }
  server {
    listen 127.0.0.1:$p ssl http2;
    ssl_certificate $CE/server.pem;
    ssl_certificate_key $CE/server.key;
    ssl_client_certificate $CE/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 60s;
    location / {
      $nloc
      $nset X-Forwarded-For \$proxy_add_x_forwarded_for;
      $nset X-Forwarded-Proto https;
      $nset X-Forwarded-Client-Cert "Subject=\"\$ssl_client_s_dn\"";
    }
  }
}
EOF
  taskset -c 0 nginx -c "$T/nginx-$tag.conf" -p "$T/nginx-$tag" > "$T/nginx-$tag.log" 2>&1 &
  PORT[nginx]=$p; PID[nginx]=$!; PIDS+=($!)
  for n in "${NAMES[@]}"; do wait_port "${PORT[$n]}" "${PID[$n]}"; done
  sleep 0.3
}
stop_peers() {
  for n in "${NAMES[@]}"; do kill "${PID[$n]}" 2> /dev/null; wait "${PID[$n]}" 2> /dev/null; done
}

RESULTS=$T/results.jsonl
h2load_cmd="h2load -c $CONNS -m $STREAMS -t 1 -D $SECS"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; h2load $(h2load --version | awk '{print $2}'); rounds of ${SECS}s"

# load_round KIND NAME PID URL [h2load flags]: one h2load round, its figures appended to RESULTS.
load_round() {
  local kind=$1 n=$2 pid=$3 url=$4 c0 c1 rc
  shift 4
  c0=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  taskset -c 1 env WRK_CERT="$CE/client.pem" WRK_KEY="$CE/client.key" LD_PRELOAD="$T/cert.so" \
    $h2load_cmd "$@" --log-file "$T/h2load-$n.log" "$url" > "$T/h2load-$n.out" 2>&1
  rc=$?
  c1=$(cpu_ticks "$pid")
  python3 - "$kind" "$n" "$round" "$rc" "$T/h2load-$n.out" "$T/h2load-$n.log" $((c1 - c0)) "$TCK" \
    "$RESULTS" $((CONNS * STREAMS)) <<'EOF'
import json, re, sys
kind, name, rnd, rc, out, log, ticks, tck, results, cm = sys.argv[1:11]
cm = int(cm)
text = open(out).read()
def grab(pattern, default=0.0):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else default
rps = grab(r"finished in [\d.]+\w+, ([\d.]+) req/s")
done = int(grab(r"requests: \d+ total, \d+ started, (\d+) done"))
ok = int(grab(r"(\d+) succeeded"))
# With -D, the requests in flight when the time is up count as failed and errored ("Process
# Request Failure"): at most -c x -m of them. More, or any timeout, is a real failure.
failed = int(grab(r"(\d+) failed"))
timeout = int(grab(r"(\d+) timeout"))
s2xx = int(grab(r"status codes: (\d+) 2xx"))
s5xx = int(grab(r"(\d+) 4xx")) + int(grab(r"(\d+) 5xx"))  # 4xx and 5xx: errors
proto = re.search(r"Application protocol: (\S+)", text)
proto = proto.group(1) if proto else "?"
# The log: start time, status, µs per request; requests cut off at the end of -D have no status.
lat = sorted(int(f[2]) for f in (line.split() for line in open(log)) if len(f) == 3 and f[1].startswith("2"))
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
# gRPC: h2load sees the HTTP status only, and a proxy's own gRPC errors (overloaded, no
# connection: UNAVAILABLE...) are HTTP 200 with grpc-status in trailers and no message. Each real
# answer is the 7-byte echo: count those, from the DATA bytes h2load received.
grpc_err = 0
if kind == "grpc":
    data = int(grab(r"\((\d+)\) data"))
    real = min(ok, data // 7)
    grpc_err, ok = ok - real, real
# h2load's req/s counts every request done, errors too: count the good ones only.
rps = rps * ok / max(1, done)
cpu = int(ticks) * 1e6 / int(tck) / max(1, done)  # per answer, errors too
r = {"kind": kind, "name": name, "rps": rps, "p50": pct(0.50), "p99": pct(0.99), "cpu": cpu, "done": done,
     "ok": ok, "failed": failed, "timeout": timeout, "grpc_errors": grpc_err, "errors": s5xx + grpc_err, "s2xx": s2xx, "proto": proto}
print(f"{kind} round {rnd} {name:<8} {proto} req/s={rps:>8.0f} p50={r['p50']}us p99={r['p99']}us "
      f"cpu_us/req={cpu:.1f} done={done} 2xx={s2xx} failed={failed} (cut off at the end, at most {cm}) timeout={timeout}"
      + (f" grpc_errors={grpc_err} (HTTP 200, no answer: the proxy's own gRPC error)" if grpc_err else "")
      + (f" h2load exit {rc}" if rc != "0" else ""))
if proto not in ("h2", "h2c") or failed > cm or timeout or s2xx < ok or rc != "0" or grpc_err:
    print(f"  WARNING {name}: not every request was an h2 2xx; h2load said:\n" + text[-1500:])
with open(results, "a") as f:
    f.write(json.dumps(r) + "\n")
EOF
}

# 1. Throughput and latency, GET /ping.
UP=$(free_port)
taskset -c 1 "$B/tests/bench/bench-upstream" "$UP" > "$T/upstream.log" 2>&1 &
UPID=$!; PIDS+=("$UPID")
wait_port "$UP" "$UPID"
start_peers "$UP" load
for round in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    load_round get "$n" "${PID[$n]}" "https://127.0.0.1:${PORT[$n]}/ping"
  done
done
stop_peers
kill "$UPID"; wait "$UPID" 2> /dev/null

# 1b. Unary gRPC calls: the same h2load posting one gRPC message (a 2-byte protobuf) to
# /bench.Echo/Call, each peer forwarding over h2c to h2_grpc.py (grpc.aio, CPU 1), which echoes
# it; only echoes count as calls. "direct": h2load's connections straight to it over h2c (the
# service is not faster that way: through a proxy it gets a few multiplexed connections). h2load
# checks the HTTP status only; one call through each peer with a real gRPC client (grpc-status OK,
# the echo) comes first.
if /usr/bin/python3 -c "import grpc" 2> /dev/null; then
  GUP=$(free_port)
  taskset -c 1 "$root/tests/bench/h2_grpc.py" serve "$GUP" > "$T/grpc.log" 2>&1 &
  GPID=$!; PIDS+=("$GPID")
  wait_port "$GUP" "$GPID"
  start_peers "$GUP" grpc grpc
  printf '\x00\x00\x00\x00\x02\x08\x01' > "$T/grpc-body"
  GFLAGS=(-d "$T/grpc-body" -H "content-type: application/grpc" -H "te: trailers")
  for n in "${NAMES[@]}"; do
    echo "grpc check $n: $("$root/tests/bench/h2_grpc.py" check "${PORT[$n]}" "$CE/client.pem" "$CE/client.key" "$CE/ca.pem" 2>&1)"
  done
  for round in $(seq 1 "$ROUNDS"); do
    for n in "${NAMES[@]}"; do
      load_round grpc "$n" "${PID[$n]}" "https://127.0.0.1:${PORT[$n]}/bench.Echo/Call" "${GFLAGS[@]}"
    done
    load_round grpc direct "$GPID" "http://127.0.0.1:$GUP/bench.Echo/Call" "${GFLAGS[@]}"
  done
  stop_peers
  kill "$GPID"; wait "$GPID" 2> /dev/null
else
  echo "gRPC skipped: no python3-grpcio for /usr/bin/python3 (deploy/install-deps.sh bench)"
fi

# 2. Memory: fresh peers in front of a local service that never answers.
SLOW=$(free_port)
taskset -c 1 python3 "$root/tests/bench/h2_slow_upstream.py" "$SLOW" > "$T/slow.log" 2>&1 &
SPID=$!; PIDS+=("$SPID")
wait_port "$SLOW" "$SPID"
start_peers "$SLOW" mem
MEM=$T/mem.jsonl
# Connections from process PID to the local service that never answers: its held requests.
at_local() { ss -Htnp state established "( dport = :$SLOW )" | grep -c "pid=$1,"; }
for n in "${NAMES[@]}"; do
  pid=${PID[$n]}
  rest=$(rss_kib "$pid")
  coproc taskset -c 1 python3 "$root/tests/bench/h2_hold.py" "${PORT[$n]}" "$CE/client.pem" \
    "$CE/client.key" "$CE/ca.pem" "$IDLE" 2> "$T/hold-$n.err"
  HOLD_PID=$COPROC_PID
  held=0
  read -r -t 120 _ held <&"${COPROC[0]}" || { echo "h2.sh: $n: h2_hold gave no answer: $(cat "$T/hold-$n.err")"; }
  sleep 1
  idle_rss=$(rss_kib "$pid")
  echo "streams $SCONNS $SPER /slow" >&"${COPROC[1]}"
  read -r -t 60 sline <&"${COPROC[0]}"
  want=$((SCONNS * SPER)); got=0
  for _ in $(seq 1 100); do
    got=$(at_local "$pid")
    [[ $got -ge $want ]] && break
    sleep 0.1
  done
  sleep 0.5
  streams_rss=$(rss_kib "$pid")
  echo count >&"${COPROC[1]}"
  read -r -t 30 cline <&"${COPROC[0]}"
  wfd=${COPROC[1]}; exec {wfd}>&-
  wait "$HOLD_PID" 2> /dev/null; HOLD_PID=
  # The caller has gone: its streams' requests at the local service should go with it.
  left=0
  for _ in $(seq 1 50); do
    left=$(at_local "$pid")
    [[ $left -eq 0 ]] && break
    sleep 0.1
  done
  [[ $left -gt 0 ]] && echo "$n: $left connections to the local service still open 5 s after the caller closed its $SCONNS connections"
  echo "$n: rest ${rest} KiB; ${held:-0} idle h2 connections: ${idle_rss} KiB; +$sline, $got at the local service: ${streams_rss} KiB; at the end: $cline"
  echo "{\"name\": \"$n\", \"rest\": $rest, \"held\": ${held:-0}, \"idle_rss\": $idle_rss, \"streams\": $got, \"streams_rss\": $streams_rss, \"left\": $left}" >> "$MEM"
done
stop_peers

# Side by side: medians of the rounds, and the ratios (above 1 favours the sidecar for req/s, the
# others for µs and KiB).
python3 - "$RESULTS" "$MEM" "$h2load_cmd" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
mem = {m["name"]: m for m in (json.loads(l) for l in open(sys.argv[2]))}
names = ["sidecar", "haproxy", "nginx"]
def med(kind, n, k):
    v = [r[k] for r in runs if r["kind"] == kind and r["name"] == n]
    return statistics.median(v) if v else None
rows = []
def row(label, vals, digits=0, direct=None, ratios=True):
    f = lambda v: "-" if v is None else f"{v:,.{digits}f}"
    ratio = lambda a, b: "-" if a is None or not b or not ratios else f"{a / b:.2f}"
    rows.append(f"| {label} | {f(vals['sidecar'])} | {f(vals['haproxy'])} | {f(vals['nginx'])} | "
                f"{ratio(vals['sidecar'], vals['haproxy'])} | {ratio(vals['sidecar'], vals['nginx'])} |"
                f" {f(direct)} |")
for kind, what in (("get", "GET /ping"), ("grpc", "unary gRPC")):
    unit = "req/s" if kind == "get" else "calls/s"
    d = (lambda k: med(kind, "direct", k)) if kind == "grpc" else (lambda k: None)
    row(f"{what}: {unit}", {n: med(kind, n, "rps") for n in names}, direct=d("rps"))
    row(f"{what}: p50 µs", {n: med(kind, n, "p50") for n in names}, direct=d("p50"))
    row(f"{what}: p99 µs", {n: med(kind, n, "p99") for n in names}, direct=d("p99"))
    row(f"{what}: errors (4xx, 5xx{', gRPC' if kind == 'grpc' else ''})", {n: med(kind, n, "errors") for n in names},
        direct=d("errors"))
    row(f"{what}: proxy CPU µs/{'req' if kind == 'get' else 'call'}", {n: med(kind, n, "cpu") for n in names}, 1)
row("RSS at rest, KiB", {n: mem[n]["rest"] for n in names})
row("RSS per idle h2 connection, KiB",
    {n: (mem[n]["idle_rss"] - mem[n]["rest"]) / mem[n]["held"] if mem[n]["held"] else None for n in names}, 1)
row("RSS per open stream (and its upstream connection), KiB",
    {n: (mem[n]["streams_rss"] - mem[n]["idle_rss"]) / mem[n]["streams"] if mem[n]["streams"] else None
     for n in names}, 1)
row("requests still at the local service 5 s after the caller left", {n: mem[n]["left"] for n in names},
    ratios=False)
held = ", ".join("%s %d connections, %d streams" % (n, mem[n]["held"], mem[n]["streams"]) for n in names)
rounds = len([r for r in runs if r["kind"] == "get"]) // 3
print(f"\nmedians of {rounds} round(s) of `{sys.argv[3]}`; memory: {held}\n")
print("| HTTP/2 over mTLS | sidecar | HAProxy | nginx | sidecar/HAProxy | sidecar/nginx | direct |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
print("\n".join(rows))
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
