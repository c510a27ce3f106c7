#!/usr/bin/env bash
# Runs Debian's ZooKeeper server in the foreground on loopback, with its data in DIR.
# Usage: deploy/zookeeper.sh DIR CLIENT_PORT [MYID PEER_SPEC...]
#   Standalone: deploy/zookeeper.sh /tmp/zk 2181
#   Ensemble member: deploy/zookeeper.sh /tmp/zk1 2181 1 1=127.0.0.1:2888:3888 2=... 3=...
# For development and tests; production ensembles are run by their own tooling.
set -euo pipefail
dir=${1:?usage: zookeeper.sh DIR CLIENT_PORT [MYID PEER_SPEC...]}
port=${2:?usage: zookeeper.sh DIR CLIENT_PORT [MYID PEER_SPEC...]}
mkdir -p "$dir/data"
cat > "$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=20
syncLimit=10
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
minSessionTimeout=1000
maxSessionTimeout=60000
4lw.commands.whitelist=ruok,srvr,stat,mntr
CFG
if [[ $# -ge 4 ]]; then
  echo "$3" > "$dir/data/myid"
  for spec in "${@:4}"; do
    echo "server.${spec%%=*}=${spec#*=}" >> "$dir/zoo.cfg"
  done
fi
jar=/usr/share/java/zookeeper.jar
[[ -r $jar ]] || { echo "zookeeper.sh: $jar not found (apt-get install zookeeper)" >&2; exit 2; }
exec java -Xmx256m -XX:+UseSerialGC -cp "$jar:/etc/zookeeper/conf" \
  -Dzookeeper.log.dir="$dir" -Dzookeeper.root.logger=WARN,CONSOLE \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
