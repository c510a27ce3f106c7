#!/usr/bin/env bash
# The one list of Debian packages the project needs; installs whichever are missing.
# Usage: deploy/install-deps.sh [build] [run] [test] [bench] [image] [container]   (no argument: build run test)
# image: what the Dockerfile's build stage adds to build; container: what tests/container needs
# (and node, when npm is not on the machine already: tests/run.sh checks).
set -euo pipefail

declare -A groups=(
  [build]="cmake make g++ pkg-config libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev
           libssl-dev libzookeeper-mt-dev prometheus-cpp-dev libspdlog-dev doctest-dev
           libthrift-dev thrift-compiler"
  [run]="openssl curl zookeeper"
  [test]="python3 python3-yaml curl openssl zookeeper prometheus haproxy nginx-light gnuplot-nox yamllint docker-compose
          testssl.sh clang libclang-rt-14-dev python3-thrift wrk"
  [bench]="haproxy nginx-light wrk gnuplot-nox"
  [image]="ca-certificates binutils"
  [container]="podman runc debootstrap ca-certificates docker-compose python3 python3-yaml curl openssl"
  [node]="nodejs npm"
)

wanted=()
for g in "${@:-build run test}"; do
  for one in $g; do
    [[ -n "${groups[$one]:-}" ]] || { echo "install-deps.sh: unknown group '$one'" >&2; exit 2; }
    wanted+=(${groups[$one]})
  done
done

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
