#!/usr/bin/env bash
# The RESP listener against redis-server in one run (docs/benchmarks.md, "Redis
# protocol"): redis-benchmark with 50 connections and 100-byte values, SET and GET, one
# command in flight per connection and 16 pipelined, against
#   1. redis-server with appendonly yes and appendfsync everysec (its usual durable
#      setting: a write is acknowledged before it is on disk),
#   2. one kv node on RocksDB (every SET synced before it is acknowledged, group commit),
#   3. a 3-node kv dev cluster (N=3, W=2: synced on two replicas).
# Rounds alternate between the targets, so drift of the machine hits all of them alike.
# Usage: scripts/bench-resp.sh [requests per SET/GET run, default 100000] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-100000}
rounds=${2:-2}

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" curl python3 redis-server redis-tools

swift build -c release --product kv >&2
bin="$(swift build -c release --show-bin-path)"
source scripts/lib/bench-processes.sh

# redis-server beside the store, in the scratch directory.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync everysec \
    --save '' --daemonize no > "$work/redis.log" 2>&1 & pids+=($!)

# One kv node.
single_port=$(free_port)
"$bin/kv" server --port "$(free_port)" --peer-port "$(free_port)" --data "$work/single" \
    --resp-port "$single_port" > "$work/single.log" 2>&1 & pids+=($!)

# A 3-node cluster whose RESP ports are the HTTP ports + 3000.
base=$(free_base 1000 3000)
"$bin/kv" dev --data "$work/cluster" --port "$base" --resp > "$work/kv-dev.out" 2>&1 & pids+=($!)
for _ in $(seq 1 600); do grep -q "kv dev cluster" "$work/kv-dev.out" && break; sleep 0.1; done
grep -q "kv dev cluster" "$work/kv-dev.out" || { cat "$work/kv-dev.out"; exit 1; }
cluster_port=$((base + 3000))
for port in "$redis_port" "$single_port" "$cluster_port"; do
    for _ in $(seq 1 300); do [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
done

echo "## Machine"
echo
echo "- cores: $(nproc); CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- $(redis-server --version | awk '{print $1, $2, $3}'), redis-benchmark from the same package"
echo "- temporary directory file system: $(df -T "$work" | awk 'NR == 2 { print $2 }')"
echo
echo "## redis-benchmark -c 50 -d 100 -r 100000 -n $requests, $rounds alternating rounds"
echo
echo "| target | test | pipeline | round | requests/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
    for pipeline in 1 16; do
        for target in redis kv-node kv-cluster; do
            case $target in
            redis) port=$redis_port ;;
            kv-node) port=$single_port ;;
            kv-cluster) port=$cluster_port ;;
            esac
            # --csv: "test","rps","avg","min","p50","p95","p99","max" (latencies in ms).
            redis-benchmark -p "$port" -c 50 -d 100 -r 100000 -n "$requests" -P "$pipeline" -t set,get --csv 2>/dev/null |
                tr -d '"' | awk -F, -v target="$target" -v pipeline="$pipeline" -v round="$round" \
                    'NR > 1 { printf "| %s | %s | %s | %s | %d | %s | %s |\n", target, $1, pipeline, round, $2, $5, $7 }'
        done
    done
done
