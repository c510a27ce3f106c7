#!/bin/sh
# The official zookeeper image's entrypoint, as far as deploy/ uses it: zoo.cfg from ZOO_* variables.
set -eu
[ "${1:-}" = zkServer.sh ] || exec "$@"
cfg=/data/zoo.cfg
{
  echo "dataDir=/data"
  echo "dataLogDir=/datalog"
  echo "tickTime=${ZOO_TICK_TIME:-2000}"
  echo "initLimit=${ZOO_INIT_LIMIT:-5}"
  echo "syncLimit=${ZOO_SYNC_LIMIT:-2}"
  echo "admin.enableServer=false"
  echo "4lw.commands.whitelist=${ZOO_4LW_COMMANDS_WHITELIST:-srvr}"
  if [ -n "${ZOO_SERVERS:-}" ]; then
    for server in $ZOO_SERVERS; do echo "$server"; done
  else
    echo "clientPort=2181"
  fi
} > "$cfg"
echo "${ZOO_MY_ID:-1}" > /data/myid
exec java -Xmx256m -XX:+UseSerialGC -cp /usr/share/java/zookeeper.jar:/etc/zookeeper/conf \
  -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.console.threshold=INFO \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
