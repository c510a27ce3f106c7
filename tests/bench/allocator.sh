#!/bin/bash
# One general-purpose allocator against another for the sidecar, preloaded: CPU per keep-alive
# mTLS request (one worker on CPU 0, loadgen and the upstream on CPU 1, 32 connections, 5 s),
# resident memory at rest, during a flood of 3,000 idle connections, and 3 s after it ended.
#   tests/bench/allocator.sh BUILD CERTS [PRELOAD|none]...
# CERTS: a directory deploy/make-certs.sh filled (server, client and CA).
set -u
B=$1; C=$2; shift 2
for PRE in "$@"; do
BIN=$B/sidecar/sidecar
PORT=$((30000 + RANDOM % 20000)); UP=$((PORT+1)); ADM=$((PORT+2))
taskset -c 1 $B/tests/bench/bench-upstream $UP > /dev/null 2>&1 &
UPID=$!
if [ "$PRE" = none ]; then P=""; else P="LD_PRELOAD=$PRE"; fi
env $P taskset -c 0 $BIN --listen 127.0.0.1:$PORT --upstream 127.0.0.1:$UP --admin-listen 127.0.0.1:$ADM --tls-cert $C/server.pem --tls-key $C/server.key --tls-client-ca $C/ca.pem --workers 1 > /dev/null 2>&1 &
SPID=$!
for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$ADM/admin/ping && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
R0=$(grep VmRSS /proc/$SPID/status | awk '{print $2}')
C0=$(cpu)
OUT=$(taskset -c 1 $B/tests/bench/loadgen --target 127.0.0.1:$PORT --tls --cert $C/client.pem --key $C/client.key --ca $C/ca.pem -c 32 -d 5 2>&1)
C1=$(cpu)
REQ=$(echo "$OUT" | grep -oE '"requests":[0-9]+' | grep -oE '[0-9]+')
# A flood of idle connections, then rest
taskset -c 1 $B/tests/bench/loadgen --target 127.0.0.1:$PORT --tls --cert $C/client.pem --key $C/client.key --ca $C/ca.pem --hold 3000 -d 4 > /dev/null 2>&1 &
LP=$!; sleep 3.5
R1=$(grep VmRSS /proc/$SPID/status | awk '{print $2}')
wait $LP; sleep 3
R2=$(grep VmRSS /proc/$SPID/status | awk '{print $2}')
kill $SPID $UPID; wait 2>/dev/null
TCK=$(getconf CLK_TCK)
echo "${PRE##*/} req=$REQ cpu_us_per_req=$(echo "scale=2; ($C1-$C0)*1000000/$TCK/$REQ" | bc) rss_rest=$R0 rss_flood=$R1 rss_after=$R2"
done
