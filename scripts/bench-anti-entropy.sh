#!/usr/bin/env bash
# What active anti-entropy costs, all in one run on this machine, on 127.0.0.1: the same
# 3-node cluster (RocksDB, N=3, R=W=2) started three times, with anti-entropy off, at
# its default interval (1 s) and at 100 ms, each loaded the same way:
#   1. wrk, puts of fresh keys with 256-byte values over 100 connections (every write
#      also writes its row-hash index entry when anti-entropy is on);
#   2. `kv bench`, 50 % gets and 50 % puts over 10,000 keys, with latencies;
#   3. at 100 ms only, a repair: one node is stopped, the other two take 10 s of puts,
#      the node is restarted and the time until a full anti-entropy pass of its
#      partitions finds nothing left to repair is measured.
# The three configurations alternate for KV_BENCH_ROUNDS rounds (default 2), so a
# machine that slows down during the run does not favour the first one; a summary of
# every round's figures comes last. KV_BENCH_SECONDS (default 15) and KV_BENCH_CLIENTS
# (default 100) tune the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" wrk curl python3

swift build -c release --product kv
bin="$(swift build -c release --show-bin-path)"
seconds="${KV_BENCH_SECONDS:-15}"
rounds="${KV_BENCH_ROUNDS:-2}"
clients="${KV_BENCH_CLIENTS:-100}"
source scripts/lib/bench-processes.sh


http=(); peer=()
start_node() { # index interval
    local i=$1
    "$bin/kv" server --host 127.0.0.1 --port "${http[$i]}" --peer-port "${peer[$i]}" \
        --data "$work/run-$2/node$i" --node-name "node$i" --peers "$members" \
        --anti-entropy-interval-ms "$2" --log-level warning > "$work/node$i.out" 2>&1 &
    node_pids[$i]=$!
    pids+=($!)
}
wait_formed() {
    for _ in $(seq 1 300); do
        curl -s "http://127.0.0.1:${http[0]}/v1/_cluster" | grep -q '"layout_version":[1-9]' && return 0
        sleep 0.1
    done
    echo "the cluster did not form"; exit 1
}
counter() { # index name; -1 while the node does not answer
    { curl -s "http://127.0.0.1:${http[$1]}/v1/_cluster" || true; } | python3 -c "
import json, sys
try: print(json.load(sys.stdin)['counters'].get('$2', -1))
except Exception: print(-1)"
}

summary=()
for round in $(seq 1 "$rounds"); do
for interval in 0 1000 100; do
    http=("$(free_port)" "$(free_port)" "$(free_port)"); peer=("$(free_port)" "$(free_port)" "$(free_port)")
    members="127.0.0.1:${http[0]},127.0.0.1:${http[1]},127.0.0.1:${http[2]}"
    node_pids=()
    for i in 0 1 2; do start_node "$i" "$interval"; done
    wait_formed
    curl -sf -X PUT "http://127.0.0.1:${http[0]}/v1/_tables/bench/fresh" -d '{"key":["string"]}' > /dev/null
    urls="http://127.0.0.1:${http[0]},http://127.0.0.1:${http[1]},http://127.0.0.1:${http[2]}"
    label=$([ "$interval" = 0 ] && echo "off" || echo "every ${interval} ms")
    echo "==> round $round, anti-entropy $label"
    echo "  wrk, puts of fresh keys, 256-byte values, $clients connections, ${seconds}s:"
    wrk -t2 -c"$clients" -d"${seconds}s" --latency -s scripts/lib/kv-put-fresh.lua "http://127.0.0.1:${http[0]}" \
        | grep -E "Requests/sec| 50%| 99%|Non-2xx|Socket errors" | sed 's/^ */    /' | tee "$work/wrk.out"
    echo "  kv bench, 50 % gets:"
    "$bin/kv" bench --url "$urls" --clients "$clients" --duration "$seconds" --value-size 256 \
        --keys 10000 --get-ratio 0.5 --no-progress 2>&1 | grep -v "^preloaded" | sed 's/^/    /' \
        | tee "$work/bench.out"
    summary+=("round $round, anti-entropy $label: wrk $(awk '/Requests\/sec/ { print $2 }' "$work/wrk.out") puts/s, kv bench $(awk '/total/ { print $2 }' "$work/bench.out") ops/s")
    if [ "$interval" = 100 ] && [ "$round" = "$rounds" ]; then
        kill "${node_pids[2]}"; wait "${node_pids[2]}" 2>/dev/null || true
        "$bin/kv" bench --url "http://127.0.0.1:${http[0]},http://127.0.0.1:${http[1]}" --clients 20 \
            --duration 10 --value-size 256 --keys 20000 --get-ratio 0 --no-progress > "$work/missed.out" 2>&1 || true
        missed=$(awk '$1 == "put" { print $2 " puts" }' "$work/missed.out" || true)
        before=$(counter 0 anti_entropy.keys_repaired)
        start=$(date +%s.%N)
        start_node 2 "$interval"
        # Refilled once a full pass of node 3's partitions found nothing to repair.
        for _ in $(seq 1 6000); do
            sleep 0.5
            rounds=$(counter 2 anti_entropy.rounds)
            divergent=$(counter 2 anti_entropy.divergent_partitions_last_round)
            [ "$rounds" -ge 2 ] && [ "$divergent" = 0 ] && break
        done
        took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
        echo "  repair: node 3 restarted after 10 s of puts without it (${missed:-?}); in sync again after ${took}s" \
            "($(counter 2 anti_entropy.keys_repaired) keys repaired by it, $(( $(counter 0 anti_entropy.keys_repaired) - before )) by node 1)"
    fi
    for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${node_pids[@]}" 2>/dev/null || true
    rm -rf "$work/run-$interval"
done
done
echo "==> summary"
printf '  %s\n' "${summary[@]}"
