#!/usr/bin/env bash
# The one list of what the project needs from Debian: each group's programs, Python modules and
# files, with the package that provides each. Installs the packages of whatever is missing, then
# checks that every item is really there, so a stage of tests/run.sh cannot start without a tool
# it calls (tests/run.sh runs `install-deps.sh --stage STAGE` for each stage before the first).
# Usage:
#   deploy/install-deps.sh [GROUP...]            groups (no argument: build run test fuzz)
#   deploy/install-deps.sh --stage STAGE...      what a stage of tests/run.sh needs (see stages)
#   deploy/install-deps.sh --check ...           installs nothing; only reports what is missing
#   deploy/install-deps.sh --list ...            prints the items: group, item, package
# Anything still missing (not installable: no root, no sudo, no archive) ends it with exit 2 and
# one line naming each missing item, its package and the stage or group that needs it.
set -euo pipefail

# Items, each ITEM or ITEM=PACKAGE (PACKAGE defaults to ITEM):
#   a name              a program found on PATH (command -v)
#   py:MODULE           a module python3 (the first on PATH, as CMake finds it) imports
#   pydist:MODULE       the same, or from Debian's dist-packages appended to its path when that
#                       python3 is another (pyenv, a venv), as test_thrift.py does
#   /a/path             a file that must exist
#   deb:PACKAGE         a library or header package, checked with dpkg (nothing to run)
# Only what is missing is installed: an `npm` already on PATH (nodesource's nodejs ships one, and
# Debian's npm package conflicts with it) means the node group installs nothing.
declare -A groups=(
  # The compiler, CMake and the libraries of the build (CMakeLists.txt, proto/CMakeLists.txt).
  [build]="cmake make g++ pkg-config thrift=thrift-compiler
           deb:libboost1.81-dev deb:libboost-json1.81-dev deb:libboost-program-options1.81-dev
           deb:libssl-dev deb:libzookeeper-mt-dev deb:prometheus-cpp-dev deb:libspdlog-dev
           deb:doctest-dev deb:libthrift-dev deb:libnghttp2-dev"
  # deploy/quickstart.sh: make-certs.sh (openssl), zookeeper.sh (the jar and java), curl, and
  # grpc-call.py's Python grpcio (the gRPC call it prints and checks).
  [run]="openssl curl /usr/share/java/zookeeper.jar=zookeeper java=default-jre-headless
         python3 pydist:grpc=python3-grpcio"
  # The ctest suites but the container ones (tests/integration, the quick start, the benchmark
  # smoke run, the soak): ZooKeeper, Prometheus, the TLS audit, the proxies the benchmark
  # compares, Thrift's Python library, jsonschema for the tests' Zipkin collector (the span
  # schema), yamllint and docker-compose for deploy/'s files, the HTTP/2 and gRPC peers
  # (python3-h2 for raw frames, grpcio, nghttp2's nghttp and h2load).
  [test]="python3 py:yaml=python3-yaml pydist:thrift=python3-thrift curl openssl
          pydist:jsonschema=python3-jsonschema
          pydist:h2=python3-h2 pydist:grpc=python3-grpcio nghttp=nghttp2-client h2load=nghttp2-client
          /usr/share/java/zookeeper.jar=zookeeper java=default-jre-headless
          prometheus promtool=prometheus testssl=testssl.sh yamllint docker-compose
          haproxy nginx=nginx-light wrk gnuplot=gnuplot-nox ss=iproute2"
  # tests/check-format.sh: the C++ sources as .clang-format says (Debian's clang-format 14).
  [style]="clang-format-14=clang-format-14"
  # tests/bench/run.sh.
  [bench]="haproxy nginx=nginx-light wrk gnuplot=gnuplot-nox h2load=nghttp2-client pydist:grpc=python3-grpcio"
  # libFuzzer with Debian's clang 14 (tests/fuzz).
  [fuzz]="clang clang++=clang deb:libclang-rt-14-dev"
  # What the Dockerfile's build stage adds to build: deploy/container/rootfs.sh's strip and the
  # CA bundle it copies.
  [image]="/etc/ssl/certs/ca-certificates.crt=ca-certificates strip=binutils"
  # tests/container and deploy/container: podman with runc (containers.conf), catatonit for the
  # pause image `podman kube play` builds where no registry answers (podman only recommends it),
  # CNI's dnsname plugin so that containers find each other by name on a podman network (the
  # tests' `--network-alias zk`, compose's zk1..zk3; without it podman makes networks with DNS
  # off), debootstrap for debian:12, docker-compose through podman's API, rootfs.sh's strip, the
  # tests' python3, yaml, curl, make-certs.sh's openssl, and node and npm for test_manifests.py.
  # Run as root (the tests chown certificates), podman needs none of its other recommends:
  # uidmap and slirp4netns are for rootless podman, fuse-overlayfs for storage where the
  # kernel's overlay cannot be used.
  [container]="podman runc catatonit /usr/lib/cni/dnsname=golang-github-containernetworking-plugin-dnsname
               debootstrap docker-compose strip=binutils
               /etc/ssl/certs/ca-certificates.crt=ca-certificates
               python3 py:yaml=python3-yaml curl openssl node=nodejs npm"
  # Node.js and npm: test_manifests.py (the Kubernetes schema) and test_thrift.py (a Node client).
  [node]="node=nodejs npm"
)

# The groups each stage of tests/run.sh needs.
declare -A stages=(
  [plain]="build run test node style"
  [asan]="build run test node"
  [tsan]="build run test"
  [fuzz]="build fuzz"
  [container]="build container"
)

usage="usage: install-deps.sh [--check] [--list] [--stage STAGE...] [GROUP...]"
check_only=0 list=0 by_stage=0
args=()
for a in "$@"; do
  case $a in
    --check) check_only=1 ;;
    --list) list=1 ;;
    --stage) by_stage=1 ;;
    -h|--help) echo "$usage"; echo "groups: ${!groups[*]}"; echo "stages: ${!stages[*]}"; exit 0 ;;
    -*) echo "install-deps.sh: unknown option '$a' ($usage)" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done

# items[i], packages[i], needers[i] (the stages or groups that want it), deduplicated.
items=() packages=() needers=()
add() {
  local who=$1 entry=$2 item package i
  item=${entry%%=*}
  package=${entry#*=}
  [[ $item == deb:* ]] && package=${item#deb:}
  for i in "${!items[@]}"; do
    if [[ ${items[$i]} == "$item" ]]; then
      [[ " ${needers[$i]} " == *" $who "* ]] || needers[i]+=" $who"
      return
    fi
  done
  items+=("$item") packages+=("$package") needers+=("$who")
}
if ((by_stage)); then
  ((${#args[@]})) || { echo "install-deps.sh: --stage needs a stage (${!stages[*]})" >&2; exit 2; }
  for s in "${args[@]}"; do
    [[ -n ${stages[$s]:-} ]] || { echo "install-deps.sh: unknown stage '$s' (${!stages[*]})" >&2; exit 2; }
    for g in ${stages[$s]}; do
      for e in ${groups[$g]}; do add "$s" "$e"; done
    done
  done
  kind=stage
else
  ((${#args[@]})) || args=(build run test fuzz)
  for g in "${args[@]}"; do
    [[ -n ${groups[$g]:-} ]] || { echo "install-deps.sh: unknown group '$g' (${!groups[*]})" >&2; exit 2; }
    for e in ${groups[$g]}; do add "$g" "$e"; done
  done
  kind=group
fi

if ((list)); then
  for i in "${!items[@]}"; do printf '%s\t%s\t%s\n' "${needers[$i]}" "${items[$i]}" "${packages[$i]}"; done
  exit 0
fi

present() {
  case $1 in
    py:*) python3 -c "import ${1#py:}" >/dev/null 2>&1 ;;
    pydist:*) python3 -c "import sys; sys.path.append('/usr/lib/python3/dist-packages'); import ${1#pydist:}" \
                >/dev/null 2>&1 ;;
    deb:*) dpkg-query -W -f='${Status}' "${1#deb:}" 2>/dev/null | grep -q "install ok installed" ;;
    /*) [[ -e $1 ]] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
# Indexes of the missing items.
missing() {
  local i
  for i in "${!items[@]}"; do present "${items[$i]}" || echo "$i"; done
}
# One line: each missing item, its package and who needs it, then why; exit 2.
fail() {
  local why=$1 i what=""
  for i in $2; do
    what+="${what:+; }${items[$i]#deb:} (package ${packages[$i]}, $kind ${needers[$i]// /, })"
  done
  echo "install-deps.sh: missing $what: $why" >&2
  exit 2
}

todo=$(missing)
[[ -z $todo ]] && exit 0
((check_only)) && fail "not installed (--check installs nothing)" "$todo"

want=()
for i in $todo; do [[ " ${want[*]} " == *" ${packages[$i]} "* ]] || want+=("${packages[$i]}"); done
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || fail "not root and no sudo to install ${want[*]}" "$todo"
  sudo="sudo"
fi
echo "install-deps.sh: installing ${want[*]}"
log=$(mktemp /tmp/install-deps.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${want[@]}"; } >"$log" 2>&1; then
  err=$(grep -E '^(E|W): ' "$log" | tail -n1)
  fail "apt-get could not install ${want[*]} (${err:-see $log}; log in $log)" "$todo"
fi
rm -f "$log"
todo=$(missing)
[[ -z $todo ]] || fail "still not found after installing its package" "$todo"
