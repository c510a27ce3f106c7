# Sourced by the container scripts: picks the engine and sets "engine" (an array: the command and
# its options). CONTAINER_ENGINE=podman|docker chooses; default podman when installed, else docker.
# For podman, containers.conf beside this file plus this machine's rlimits goes to a generated file
# passed by CONTAINERS_CONF, so the machine's own configuration is left alone.
here_engine=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
engine_name=${CONTAINER_ENGINE:-}
if [[ -z $engine_name ]]; then
  if command -v podman >/dev/null; then engine_name=podman; else engine_name=docker; fi
fi
engine=("$engine_name")
if [[ $engine_name == podman && -z ${CONTAINERS_CONF:-} ]]; then
  # A container may not get more than we have (no CAP_SYS_RESOURCE in some VMs); podman itself
  # holds at most pid_max processes.
  limit() { local v=$1; [[ $v == unlimited ]] && v=$2; ((v > $2)) && v=$2; echo "$v"; }
  nofile=$(limit "$(ulimit -Hn)" 1048576)
  nproc=$(limit "$(ulimit -Hu)" "$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)")
  conf_dir=${XDG_RUNTIME_DIR:-/tmp}/sidecar-containers-$(id -u)
  mkdir -p "$conf_dir"
  { cat "$here_engine/containers.conf"
    printf '\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
      "$nofile" "$nofile" "$nproc" "$nproc"
  } > "$conf_dir/containers.conf.$$"
  mv "$conf_dir/containers.conf.$$" "$conf_dir/containers.conf"
  export CONTAINERS_CONF=$conf_dir/containers.conf
  unset -f limit
fi
