#!/usr/bin/env bash
# A long sweep of the deterministic simulator, for runs outside CI: builds the Simulator
# in release mode and runs COUNT seeds (default 100,000) from FIRST (default 1), split
# into JOBS processes (default: the number of cores). Each failing seed is printed with
# the command that replays it; the script exits non-zero if any seed failed. The test
# suite runs it when KV_SIM_SWEEP is set (its value is the count).
#
#   ./scripts/simulation-sweep.sh [COUNT] [FIRST] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-100000}
first=${2:-1}
jobs=${3:-$(nproc)}

swift build -c release --product Simulator
simulator="$(swift build -c release --show-bin-path)/Simulator"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
share=$(((count + jobs - 1) / jobs))
started=$(date +%s)
pids=()
for ((job = 0; job < jobs; job++)); do
    start=$((first + job * share))
    size=$((count - job * share))
    ((size > share)) && size=$share
    ((size <= 0)) && break
    "$simulator" --sweep "$size" --first "$start" >"$logs/$job.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
cat "$logs"/*.log
echo "simulation sweep: $count seeds from $first in $jobs processes, $(($(date +%s) - started)) s; $(grep -h ' failed$' "$logs"/*.log | awk '{ failed += $(NF - 1) } END { print failed + 0 }') failed"
exit $status
