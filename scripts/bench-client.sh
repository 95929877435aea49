#!/usr/bin/env bash
# The cluster-aware client's saved hop, in one run on this machine, on 127.0.0.1:
# a 5-node `kv dev` cluster (RocksDB, N=3, R=W=2), so a node is a replica of 3/5 of the
# keys, loaded by `kv bench` three ways, alternating rounds:
#   - one:    every client asks one node (a plain HTTP client), which forwards 2/5 of
#             the writes to a replica and reads 2/5 of the keys with no local copy;
#   - spread: plain clients spread over the five nodes in turn (as behind a load
#             balancer), each node forwarding 2/5 of what it gets;
#   - direct: each request goes to a replica of its key, by the layout the
#             cluster-aware client learns (`kv bench --routing direct`).
# KV_BENCH_SECONDS (default 15), KV_BENCH_CLIENTS (default 64), KV_BENCH_ROUNDS
# (default 2) and KV_BENCH_OUTPUT (a directory for the JSON reports) tune the run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" python3

swift build -c release --product kv
bin="$(swift build -c release --show-bin-path)"
seconds="${KV_BENCH_SECONDS:-15}"
clients="${KV_BENCH_CLIENTS:-64}"
rounds="${KV_BENCH_ROUNDS:-2}"
source scripts/lib/bench-processes.sh
base=$(FREE_BASE_WIDTH=5 free_base)
"$bin/kv" dev --nodes 5 --data "$work/kv" --port "$base" > "$work/kv-dev.out" 2>&1 & pids+=($!)
for _ in $(seq 1 300); do grep -q "kv dev cluster" "$work/kv-dev.out" && break; sleep 0.1; done
grep -q "kv dev cluster" "$work/kv-dev.out" || { cat "$work/kv-dev.out"; exit 1; }
urls=""
for i in 0 1 2 3 4; do urls+="${urls:+,}http://127.0.0.1:$((base + i))"; done
output="${KV_BENCH_OUTPUT:-$work}"
mkdir -p "$output"

not_at_replica() {
    local total=0
    for i in 0 1 2 3 4; do
        count=$(curl -s "http://127.0.0.1:$((base + i))/v1/_cluster" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"].get("requests.not_at_replica", 0))')
        total=$((total + count))
    done
    echo "$total"
}

run() { # one|spread|direct, get ratio, round
    local url="http://127.0.0.1:$base" routing=node
    [ "$1" = direct ] && { url="$urls"; routing=direct; }
    [ "$1" = spread ] && url="$urls"
    local before
    before=$(not_at_replica)
    "$bin/kv" bench --url "$url" --routing "$routing" --clients "$clients" --duration "$seconds" --value-size 256 \
        --keys 10000 --get-ratio "$2" --no-progress --output "$output/client-$1-$2-$3.json" 2>&1 \
        | grep -v "^preloaded" | sed 's/^/    /'
    echo "    requests that arrived at a node not a replica of their key: $(($(not_at_replica) - before))"
}

for ratio in 0 1 0.5; do
    for round in $(seq 1 "$rounds"); do
        for mode in one spread direct; do
            echo "==> get ratio $ratio, round $round, $mode"
            run "$mode" "$ratio" "$round"
        done
    done
done
