#!/bin/sh
# Fuzzes one target afresh for FUZZ_SECONDS (default 60), starting from a scratch copy of its
# seed corpus so that new inputs never land in the source tree. A crash leaves its input as
# crash-<target>-<hash> in the build folder: add it to the corpus as a regression.
# usage: fresh.sh FUZZER SEED_DIR WORK_DIR
set -eu
fuzzer=$1 seeds=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus"
cp "$seeds"/* "$work/corpus/"
cd "$work"
exec "$fuzzer" -max_total_time="${FUZZ_SECONDS:-60}" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/../crash-$(basename "$fuzzer")-" -print_final_stats=1 corpus
