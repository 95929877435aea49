#!/usr/bin/env bash
# Memory soak, opt-in (long): a 3-node cluster (RocksDB, N=3, R=W=2, release build,
# default settings) under a steady mixed load from `kv bench` (50 % gets, 50 % puts,
# KV_SOAK_CLIENTS clients, default 50, over KV_SOAK_KEYS keys, default 100,000, of 1 KiB)
# for KV_SOAK_MINUTES minutes (default 30). Every 10 s it samples each node's resident
# set and what its storage engine says it holds in memory (memtables, block cache,
# table readers: kv_storage_memory_bytes on /metrics). At the end it prints them per
# five minutes and says whether the resident sets levelled off: the growth over the
# last third of the run against the first two. With KV_BENCH_JSON=DIR the samples
# (soak-memory.csv) and the load's report (soak-load.json) are kept there, which
# scripts/plot-benchmarks.sh draws.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" curl python3

swift build -c release --product kv
bin="$(swift build -c release --show-bin-path)"
minutes="${KV_SOAK_MINUTES:-30}"
clients="${KV_SOAK_CLIENTS:-50}"
keys="${KV_SOAK_KEYS:-100000}"
source scripts/lib/bench-processes.sh
json_dir="${KV_BENCH_JSON:-$work/json}"
mkdir -p "$json_dir"

http=("$(free_port)" "$(free_port)" "$(free_port)")
peer=("$(free_port)" "$(free_port)" "$(free_port)")
members="127.0.0.1:${http[0]},127.0.0.1:${http[1]},127.0.0.1:${http[2]}"
node_pids=()
for i in 0 1 2; do
    "$bin/kv" server --host 127.0.0.1 --port "${http[$i]}" --peer-port "${peer[$i]}" --peers "$members" \
        --data "$work/node$i" --node-name "node$i" --log-level warning > "$work/node$i.out" 2>&1 &
    pids+=($!)
    node_pids+=($!)
done
for _ in $(seq 1 300); do
    curl -s "http://127.0.0.1:${http[0]}/v1/_cluster" | grep -q '"layout_version":[1-9]' && break
    sleep 0.1
done
urls="http://127.0.0.1:${http[0]},http://127.0.0.1:${http[1]},http://127.0.0.1:${http[2]}"

samples="$json_dir/soak-memory.csv"
echo "seconds,node,rss_bytes,memtables_bytes,block_cache_bytes,table_readers_bytes" > "$samples"
sample() { # seconds
    for i in 0 1 2; do
        local rss metrics
        # A node that died leaves an empty sample rather than ending the run.
        rss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/${node_pids[$i]}/status" 2>/dev/null || true)
        metrics=$(curl -s "http://127.0.0.1:${http[$i]}/metrics" || true)
        part() { awk -v part="$1" -F'[ ]' 'index($1, "kv_storage_memory_bytes{") == 1 && index($1, "part=\"" part "\"") { print $2 }' <<<"$metrics"; }
        echo "$1,node$i,$rss,$(part memtables),$(part block_cache),$(part table_readers)" >> "$samples"
    done
}

echo "==> loading $keys keys of 1 KiB"
"$bin/kv" bench --url "$urls" --clients 50 --duration 1 --value-size 1024 --keys "$keys" \
    --get-ratio 1 --no-progress 2>&1 | grep "^preloaded" | sed 's/^/    /'
echo "==> $minutes minutes of 50 % gets, 50 % puts, $clients clients"
started=$(date +%s)
"$bin/kv" bench --url "$urls" --clients "$clients" --duration "$((minutes * 60))" --value-size 1024 \
    --keys "$keys" --get-ratio 0.5 --no-preload --no-progress --output "$json_dir/soak-load.json" \
    > "$work/load.out" 2>&1 &
load=$!
pids+=($load)
while kill -0 "$load" 2>/dev/null; do
    sample "$(($(date +%s) - started))"
    sleep 10
done
wait "$load" || true
sed 's/^/    /' "$work/load.out"

python3 scripts/lib/soak-report.py "$samples"
