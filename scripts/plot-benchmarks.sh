#!/usr/bin/env bash
# Draws the benchmarks' pictures from the JSON the scripts leave with KV_BENCH_JSON=DIR:
#   cluster-latency.png   latency distributions (HDR percentile plot) of the cluster
#                         benchmark: kv and etcd under the same wrk puts, and `kv bench`
#                         puts and gets (from ./scripts/bench-cluster.sh);
#   handoff-timeline.png  throughput and p99 second by second while a fourth node joins,
#                         at each transfer limit, with the level before the change (from
#                         ./scripts/bench-handoff.sh);
#   soak-memory.png       each node's resident set and its engine's memory over a soak
#                         (from ./scripts/soak-memory.sh).
# Usage: scripts/plot-benchmarks.sh DIR [OUTPUT-DIR, default docs/plots]. A picture whose
# JSON is missing is skipped. Installs gnuplot (Debian's gnuplot-nox) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages gnuplot-nox python3

input="${1:?usage: scripts/plot-benchmarks.sh DIR [OUTPUT-DIR]}"
output="${2:-docs/plots}"
mkdir -p "$output"
python3 scripts/lib/plot-benchmarks.py "$input" "$output" | gnuplot
ls -l "$output"/*.png 2>/dev/null || echo "no picture drawn: $input holds none of the JSON the pictures need"
