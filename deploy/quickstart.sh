#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a sidecar answering through mTLS:
# installs what is missing, builds, makes development certificates, starts ZooKeeper, pinghelp
# and the sidecar on loopback, and prints a curl line. Ctrl-C stops everything it started.
#   deploy/quickstart.sh           run until Ctrl-C
#   deploy/quickstart.sh --check   start, call /ping through mTLS, stop (used by the test suite)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${QUICKSTART_DIR:-$root/.quickstart}
build=${QUICKSTART_BUILD:-$root/build}
check=false
[[ ${1:-} == --check ]] && check=true

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

"$root/deploy/install-deps.sh" build run
if [[ ! -x $build/sidecar/sidecar || ! -x $build/sidecar/pinghelp ]] || ! $check; then
  say "building in $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc)" --target sidecar pinghelp >/dev/null
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
pick() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }
zk_port=$(pick "${ZK_PORT:-2181}")
app_port=$(pick "${APP_PORT:-8080}")
tls_port=$(pick "${TLS_PORT:-8443}")
admin_port=$(pick "${ADMIN_PORT:-9990}")
[[ $admin_port == "$tls_port" ]] && admin_port=$(pick $((admin_port + 1)))

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$state/pids" "$state/zk/data" -r 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; say "stopping"; exit 0' INT TERM

wait_port() { for _ in $(seq 1 300); do port_free "$1" || return 0; sleep 0.1; done; echo "nothing on port $1 ($2); see $state/$2.log" >&2; exit 1; }

say "starting ZooKeeper on 127.0.0.1:$zk_port"
rm -rf "$state/zk"
"$root/deploy/zookeeper.sh" "$state/zk" "$zk_port" > "$state/zookeeper.log" 2>&1 & pids+=($!)
say "starting pinghelp on 127.0.0.1:$app_port"
"$build/sidecar/pinghelp" --listen "127.0.0.1:$app_port" --help-dir "$root/proto/help" > "$state/pinghelp.log" 2>&1 & pids+=($!)
wait_port "$app_port" pinghelp
wait_port "$zk_port" zookeeper
say "starting sidecar on 127.0.0.1:$tls_port (admin 127.0.0.1:$admin_port)"
"$build/sidecar/sidecar" --listen "127.0.0.1:$tls_port" --upstream "127.0.0.1:$app_port" \
  --admin-listen "127.0.0.1:$admin_port" \
  --tls-cert "$state/certs/server.pem" --tls-key "$state/certs/server.key" \
  --tls-client-ca "$state/certs/ca.pem" \
  --zk "127.0.0.1:$zk_port" --zk-path /discovery/dev/pinghelp --advertise-host 127.0.0.1 \
  ${QUICKSTART_SIDECAR_FLAGS:-} > "$state/sidecar.log" 2>&1 & pids+=($!)
printf '%s\n' "${pids[@]}" > "$state/pids"
wait_port "$tls_port" sidecar

c=$state/certs
call="curl --cacert $c/ca.pem --cert $c/client.pem --key $c/client.key https://localhost:$tls_port/ping"
resolve="$build/sidecar/sidecar resolve zk2!127.0.0.1:$zk_port!/discovery/dev/pinghelp"
if $check; then
  answer=$($call -sS)
  [[ $answer == pong ]] || { echo "quickstart: expected pong, got '$answer'" >&2; exit 1; }
  echo "quickstart check: pong through mTLS on port $tls_port"
  for _ in $(seq 1 100); do
    members=$($resolve 2>/dev/null || true)
    [[ $members == *"\"port\":$tls_port"* ]] && break
    sleep 0.2
  done
  [[ $members == *"\"port\":$tls_port"* ]] || { echo "quickstart: not announced: '$members'" >&2; exit 1; }
  echo "quickstart check: announced in ZooKeeper: $members"
  exit 0
fi
cat <<MSG

Everything is up. Call pinghelp through the sidecar with mTLS:

  $call

Also try:  ${call%/ping}/help
Members:   $resolve   (add --watch to follow changes)
Admin:     curl http://127.0.0.1:$admin_port/metrics   (and /admin/ping, /health, /ready)
Logs:      $state/*.log
Ctrl-C stops everything.
MSG
wait
