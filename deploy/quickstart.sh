#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the whole mesh on loopback: installs what is
# missing, builds, makes development certificates, starts ZooKeeper, two pinghelp instances each
# behind its own sidecar (both announced in ZooKeeper), and a caller's sidecar whose outbound port
# finds pinghelp by name; prints a curl line for each way in. Ctrl-C stops everything it started:
# the sidecars first (each withdraws its member and drains), then pinghelp, then ZooKeeper.
#   deploy/quickstart.sh           run until Ctrl-C (or SIGTERM: started in the background, as
#                                  `setsid deploy/quickstart.sh &`, bash ignores SIGINT, so stop
#                                  it with kill -TERM PID)
#   deploy/quickstart.sh --check   start, call /ping both ways, check that the outbound calls
#                                  spread over both members, stop (used by the test suite)
# It builds build/ (QUICKSTART_BUILD) with tests/run.sh's plain-stage flags, so that tests/run.sh
# afterwards reuses it; a QUICKSTART_BUILD that holds both binaries is used as it is.
# Ports: ZK_PORT APP_PORT TLS_PORT ADMIN_PORT OUTBOUND_PORT, or the next free ones; the second
# instance and the caller's sidecar take the next free ports after them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${QUICKSTART_DIR:-$root/.quickstart}
build=${QUICKSTART_BUILD:-$root/build}
check=false
[[ ${1:-} == --check ]] && check=true

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

"$root/deploy/install-deps.sh" build run
if [[ ! -x $build/sidecar/sidecar || ! -x $build/sidecar/pinghelp ]] ||
  { ! $check && [[ -z ${QUICKSTART_BUILD:-} ]]; }; then
  # Exactly tests/run.sh's plain-stage flags: a second configure with other flags would rebuild
  # the whole tree.
  say "building sidecar and pinghelp in $build (the first time about 10 minutes on 2 cores; tests/run.sh reuses it)"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON >/dev/null
  # The build's own progress lines; compiler errors go to stderr as they are.
  cmake --build "$build" -j"$(nproc)" --target sidecar pinghelp |
    awk '/^\[ *[0-9]+%\]/ { print "    " $0; fflush() }'
fi

# A second run stops what the first one left behind.
mkdir -p "$state"
if [[ -f $state/pids ]]; then
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$state/pids"
  rm -f "$state/pids"
  sleep 0.5
fi
[[ -f $state/certs/client.pem ]] || { say "making development certificates"; "$root/deploy/make-certs.sh" "$state/certs" >/dev/null; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick VAR PORT: the first port from PORT that is free and not yet handed out by this run
# (nothing is bound until the processes start, so a port must not be chosen twice).
taken=" "
pick() {
  local p=$2
  while [[ $taken == *" $p "* ]] || ! port_free "$p"; do p=$((p + 1)); done
  taken+="$p "
  printf -v "$1" '%s' "$p"
}
pick zk_port "${ZK_PORT:-2181}"
pick app_port "${APP_PORT:-8080}"
pick tls_port "${TLS_PORT:-8443}"
pick admin_port "${ADMIN_PORT:-9990}"
pick outbound_port "${OUTBOUND_PORT:-4140}"
pick app2_port $((app_port + 1))
pick tls2_port $((tls_port + 1))
pick admin2_port $((admin_port + 1))
pick caller_tls_port $((tls2_port + 1))
pick caller_admin_port $((admin2_port + 1))
pick caller_app_port $((app2_port + 1))
pick grpc_port $((caller_app_port + 1))
pick grpc2_port $((grpc_port + 1))

# Every process runs in a session of its own (setsid), so that the terminal's Ctrl-C reaches
# this script alone: a sidecar that got the terminal's SIGINT and then this script's SIGTERM took
# the second one as "exit at once", withdrew nothing and dropped what was in flight. Each gets one
# SIGTERM, in order: the sidecars (each withdraws its member while ZooKeeper still runs, then
# drains), then pinghelp, then ZooKeeper.
pids=() sidecar_pids=() app_pids=() zk_pids=()
# start LIST LOG COMMAND...: COMMAND in its own session, output to LOG, its pid added to LIST.
start() {
  local -n list=$1
  local log=$2
  shift 2
  setsid "$@" > "$log" 2>&1 &
  list+=($!)
  pids+=($!)
}
# stop_group PID...: one SIGTERM each, then wait until each has exited. A second Ctrl-C during
# the wait sends a second SIGTERM, which a sidecar takes as "exit at once".
stop_group() {
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local pid
  for pid; do
    # wait returns early (above 128) when a trapped signal arrives: wait again while it runs.
    until wait "$pid" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null; do :; done
  done
}
stopped=false
stop_all() {
  $stopped && return
  stopped=true
  trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM HUP
  stop_group "${sidecar_pids[@]}"
  stop_group "${app_pids[@]}"
  stop_group "${zk_pids[@]}"
  rm -f "$state/pids" "$state/zk/data" -r 2>/dev/null || true
}
trap stop_all EXIT
trap 'echo; say "stopping: the sidecars withdraw their members and drain (Ctrl-C again: at once)"; stop_all; exit 0' INT TERM HUP

wait_port() { for _ in $(seq 1 300); do port_free "$1" || return 0; sleep 0.1; done; echo "nothing on port $1 ($2); see $state/$2.log" >&2; exit 1; }

c=$state/certs
say "starting ZooKeeper on 127.0.0.1:$zk_port"
rm -rf "$state/zk"
start zk_pids "$state/zookeeper.log" "$root/deploy/zookeeper.sh" "$state/zk" "$zk_port"

# member N APP_PORT TLS_PORT ADMIN_PORT GRPC_PORT: pinghelp behind its own sidecar, announced in
# /discovery/dev/pinghelp once /ping has answered twice. pinghelp serves gRPC on a port of its
# own; the sidecar sends gRPC calls there (h2c) and the rest to its HTTP/1.1 port.
member() {
  say "starting pinghelp-$1 on 127.0.0.1:$2 (gRPC $5) behind sidecar-$1 on 127.0.0.1:$3 (admin 127.0.0.1:$4)"
  start app_pids "$state/pinghelp-$1.log" \
    "$build/sidecar/pinghelp" --listen "127.0.0.1:$2" --grpc-listen "127.0.0.1:$5" \
    --help-dir "$root/proto/help"
  wait_port "$2" "pinghelp-$1"
  # --deregister-grace 2s: the callers here are sidecars, whose resolvers follow a removal at
  # once; the default (22 s) is for Finagle callers, and would make every stop that long.
  # shellcheck disable=SC2086 # QUICKSTART_SIDECAR_FLAGS is a list of flags
  start sidecar_pids "$state/sidecar-$1.log" \
    "$build/sidecar/sidecar" --listen "127.0.0.1:$3" --upstream "127.0.0.1:$2" \
    --admin-listen "127.0.0.1:$4" \
    --tls-cert "$c/server.pem" --tls-key "$c/server.key" --tls-client-ca "$c/ca.pem" \
    --zk "127.0.0.1:$zk_port" --zk-path /discovery/dev/pinghelp --advertise-host 127.0.0.1 \
    --upstream-protocol auto --upstream-grpc "127.0.0.1:$5" \
    --deregister-grace 2s ${QUICKSTART_SIDECAR_FLAGS:-}
}
wait_port "$zk_port" zookeeper
member 1 "$app_port" "$tls_port" "$admin_port" "$grpc_port"
member 2 "$app2_port" "$tls2_port" "$admin2_port" "$grpc2_port"
# The caller's sidecar: its local service is you, with curl. It announces nothing; its outbound
# port maps Host: NAME to the serverset /discovery/dev/NAME and carries each call over mTLS with
# the caller's certificate (spiffe://dev.local/caller). Its inbound side is unused here: nothing
# listens on its --upstream.
say "starting the caller's sidecar: outbound 127.0.0.1:$outbound_port (admin 127.0.0.1:$caller_admin_port)"
start sidecar_pids "$state/caller-sidecar.log" \
  "$build/sidecar/sidecar" --outbound-listen "127.0.0.1:$outbound_port" \
  --zk "127.0.0.1:$zk_port" --route-prefix /discovery/dev \
  --listen "127.0.0.1:$caller_tls_port" --upstream "127.0.0.1:$caller_app_port" \
  --admin-listen "127.0.0.1:$caller_admin_port" \
  --tls-cert "$c/client.pem" --tls-key "$c/client.key" --tls-client-ca "$c/ca.pem"
printf '%s\n' "${pids[@]}" > "$state/pids"
wait_port "$tls_port" sidecar-1
wait_port "$tls2_port" sidecar-2
wait_port "$outbound_port" caller-sidecar

call="curl --cacert $c/ca.pem --cert $c/client.pem --key $c/client.key https://localhost:$tls_port/ping"
outbound="curl -H 'Host: pinghelp' http://127.0.0.1:$outbound_port/ping"
grpc_call="python3 $root/deploy/grpc-call.py 127.0.0.1:$outbound_port pinghelp"
# The address in single quotes where it is printed: an interactive bash expands '!' in double
# quotes and bare words (history expansion).
serverset="zk2!127.0.0.1:$zk_port!/discovery/dev/pinghelp"
resolve=("$build/sidecar/sidecar" resolve "$serverset")
# Requests a member's sidecar has answered, from its /metrics.
served() { curl -sS "http://127.0.0.1:$1/metrics" | awk '/^sidecar_requests_total/ { n += $NF } END { print n + 0 }'; }
# Callers find the members once each has answered /ping twice (--rise) and announced itself.
say "waiting for both members to be announced in /discovery/dev/pinghelp"
announced() { [[ $members == *"\"port\":$tls_port"* && $members == *"\"port\":$tls2_port"* ]]; }
for _ in $(seq 1 150); do
  members=$("${resolve[@]}" 2>/dev/null || true)
  announced && break
  sleep 0.2
done
announced || { echo "quickstart: not both announced: '$members'; see $state/sidecar-*.log" >&2; exit 1; }
if $check; then
  answer=$($call -sS)
  [[ $answer == pong ]] || { echo "quickstart: expected pong, got '$answer'" >&2; exit 1; }
  echo "quickstart check: pong through mTLS on port $tls_port"
  echo "quickstart check: both members announced in ZooKeeper:"
  echo "$members"
  before1=$(served "$admin_port") before2=$(served "$admin2_port")
  calls=40
  for i in $(seq 1 $calls); do
    answer=$(curl -sS -H 'Host: pinghelp' "http://127.0.0.1:$outbound_port/ping")
    [[ $answer == pong ]] || { echo "quickstart: outbound call $i: expected pong, got '$answer'" >&2; exit 1; }
  done
  # The member sidecars count a request once its answer is written: let the last one land.
  for _ in $(seq 1 20); do
    got1=$(($(served "$admin_port") - before1)) got2=$(($(served "$admin2_port") - before2))
    ((got1 + got2 >= calls)) && break
    sleep 0.1
  done
  echo "quickstart check: $calls outbound calls answered pong, via member 1: $got1, member 2: $got2"
  ((got1 > 0 && got2 > 0)) || { echo "quickstart: the outbound calls did not spread over both members" >&2; exit 1; }
  answer=$($grpc_call)
  [[ $answer == pong ]] || { echo "quickstart: gRPC Ping through the outbound port: expected pong, got '$answer'" >&2; exit 1; }
  echo "quickstart check: gRPC Ping by name through the outbound port answered pong"
  exit 0
fi
cat <<MSG

Everything is up. Call pinghelp through its sidecar with mTLS, as another service's sidecar would:

  $call

Call it by name through the caller's sidecar, as a local service would (plain HTTP on loopback;
the sidecar finds the members in ZooKeeper, balances over both and carries the call over mTLS):

  $outbound

The same over gRPC (HTTP/2; each call balanced on its own over the members):

  $grpc_call

Also try:  ${call%/ping}/help
Members:   $build/sidecar/sidecar resolve '$serverset'   (add --watch to follow changes)
Clients:   curl http://127.0.0.1:$caller_admin_port/admin/clients   (routes, members, their cost)
Admin:     curl http://127.0.0.1:$admin_port/metrics   (members: $admin_port, $admin2_port; caller: $caller_admin_port)
Logs:      $state/*.log
Ctrl-C stops everything (in the background: kill -TERM $$).
MSG
# Until a signal; wait returns when one arrives, and its trap stops everything.
wait
