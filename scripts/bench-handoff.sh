#!/usr/bin/env bash
# What a rebalance costs, all in one run on this machine, on 127.0.0.1: a 3-node cluster
# (RocksDB unless KV_HANDOFF_ENGINE says otherwise, N=3, R=W=2, release build) holds KV_HANDOFF_KEYS keys (default 200,000) of
# 1 KiB values; `kv bench` (50 % gets, 50 % puts, KV_BENCH_CLIENTS clients, default 50)
# measures client latency before the change, then a fourth node joins and the same
# load runs again while its partitions stream to it. The handoff's throughput is the
# bytes the new node received over the time until no data moved. It runs on fresh
# clusters once per limit: by default three times, with the default per-node limit
# (64 MiB/s), throttled to 4 MiB/s (what an operator does to spare the clients), and
# with no limit.
# KV_BENCH_SECONDS (default 15) is the length of each latency window. With
# KV_BENCH_JSON=DIR each window's report (with its second-by-second timeline) is kept
# there as handoff-<limit>-before.json and -during.json, and the handoff's figures as
# handoff-<limit>.json, which scripts/plot-benchmarks.sh draws.
# With KV_HANDOFF_LOAD=0 (any value but 1) no client load runs and no latency window
# is written: the handoff alone.
# KV_HANDOFF_NODE_CONCURRENCY sets the transfers each node runs at once (default: the
# store's default). KV_HANDOFF_PARTITIONS sets the cluster's partition count (default:
# the store's, 256); fewer, larger partitions take several batches each.
# Each handoff line also gives the CPU time the four nodes used from the commit until
# no data moved (and of it the new node's, since its start), that per MiB moved, and
# the minor page faults the four nodes took meanwhile (a database server's own CPU is
# not counted).
# KV_HANDOFF_LIMITS picks the runs, from default, 4MiB and none (default: all three, in
# that order; a limit may repeat). KV_HANDOFF_ENGINE runs every node on another engine
# (sqlite, postgres, mariadb or redis; default rocksdb): the script then starts the
# database servers (scripts/lib/database-servers.sh starts all three), and each node of
# each run keeps its rows in a table of its own there.
# KV_BINARY runs another build of `kv` (say, one from an earlier revision) instead of
# this tree's, which is then not built; a relative path is taken from where the script
# was started.
set -euo pipefail
if [ -n "${KV_BINARY:-}" ]; then KV_BINARY="$(realpath "$KV_BINARY")"; fi
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" curl python3

if [ -n "${KV_BINARY:-}" ]; then
    kv="$KV_BINARY"
else
    swift build -c release --product kv
    kv="$(swift build -c release --show-bin-path)/kv"
fi
load="${KV_HANDOFF_LOAD:-1}"
seconds="${KV_BENCH_SECONDS:-15}"
clients="${KV_BENCH_CLIENTS:-50}"
keys="${KV_HANDOFF_KEYS:-200000}"
source scripts/lib/bench-processes.sh
engine="${KV_HANDOFF_ENGINE:-rocksdb}"
case "$engine" in
rocksdb | sqlite) ;;
postgres | mariadb | redis)
    source scripts/lib/database-servers.sh
    start_database_servers
    trap 'cleanup; stop_database_servers' EXIT
    ;;
*)
    echo "KV_HANDOFF_ENGINE must be rocksdb, sqlite, postgres, mariadb or redis, not $engine" >&2
    exit 2
    ;;
esac
limits="${KV_HANDOFF_LIMITS:-default 4MiB none}"
for limit in $limits; do
    case "$limit" in
    default | 4MiB | none) ;;
    *)
        echo "KV_HANDOFF_LIMITS holds default, 4MiB or none, not $limit" >&2
        exit 2
        ;;
    esac
done
# Sets `storage` to the storage flags of node $1 in run $2.
storage_flags() {
    local url=""
    case "$engine" in
    postgres) url=$KV_TEST_POSTGRES_URL ;;
    mariadb) url=$KV_TEST_MARIADB_URL ;;
    redis) url=$KV_TEST_REDIS_URL ;;
    esac
    storage=(--engine "$engine")
    if [ -n "$url" ]; then storage+=(--storage-url "$url?table=handoff_run$2_node$1"); fi
}
json_dir="${KV_BENCH_JSON:-$work/json}"
mkdir -p "$json_dir"

http=(); peer=()
partition_flags=()
if [ -n "${KV_HANDOFF_PARTITIONS:-}" ]; then partition_flags=(--partitions "$KV_HANDOFF_PARTITIONS"); fi
start_node() { # index [extra flags…]
    local i=$1
    shift
    storage_flags "$i" "$run"
    "$kv" server "${storage[@]}" "${partition_flags[@]}" --host 127.0.0.1 --port "${http[$i]}" --peer-port "${peer[$i]}" \
        --data "$work/node$i" --node-name "node$i" --log-level warning "$@" > "$work/node$i.out" 2>&1 &
    pids+=($!)
}
json() { # url python-expression-of-d
    curl -s "$1" | python3 -c "import json, sys; d = json.load(sys.stdin); print($2)"
}
bench() { # output-file json-file
    "$kv" bench --url "$urls" --clients "$clients" --duration "$seconds" --value-size 1024 \
        --keys "$keys" --get-ratio 0.5 --no-preload --no-progress --output "$2" > "$1" 2>&1
    sed 's/^/    /' "$1"
}
# The CPU time (user and system, in clock ticks) the nodes started so far have used.
node_cpu_ticks() {
    local total=0 pid
    for pid in "${pids[@]}"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$total"
}
# The minor page faults the nodes started so far have taken (pages freed to the system
# and touched again cost one each).
node_faults() {
    local total=0 pid
    for pid in "${pids[@]}"; do total=$((total + $(awk '{ print $10 }' "/proc/$pid/stat"))); done
    echo "$total"
}
summarize() { # label output-file
    summary+=("$1: $(awk '/total/ { print $2 }' "$2") ops/s, p99 get $(awk '$1 == "get" { print $5 }' "$2") µs, p99 put $(awk '$1 == "put" { print $5 }' "$2") µs")
}

summary=()
run=0
for limit in $limits; do
    run=$((run + 1))
    rm -rf "$work"/node*
    http=("$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)")
    peer=("$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)")
    members="127.0.0.1:${http[0]},127.0.0.1:${http[1]},127.0.0.1:${http[2]}"
    for i in 0 1 2; do start_node "$i" --peers "$members"; done
    for _ in $(seq 1 300); do
        curl -s "http://127.0.0.1:${http[0]}/v1/_cluster" | grep -q '"layout_version":[1-9]' && break
        sleep 0.1
    done
    urls="http://127.0.0.1:${http[0]},http://127.0.0.1:${http[1]},http://127.0.0.1:${http[2]}"
    echo "==> limit: $limit; loading $keys keys of 1 KiB"
    "$kv" bench --url "$urls" --clients 50 --duration 1 --value-size 1024 --keys "$keys" \
        --get-ratio 1 --no-progress 2>&1 | grep "^preloaded" | sed 's/^/    /'
    case "$limit" in
    none) rate=0 ;;
    4MiB) rate=4194304 ;;
    *) rate="" ;;
    esac
    if [ -n "$rate" ]; then
        curl -sf -X POST "http://127.0.0.1:${http[0]}/v1/_cluster/transfers" -d "{\"bytes_per_second\":$rate}" > /dev/null
    fi
    if [ -n "${KV_HANDOFF_NODE_CONCURRENCY:-}" ]; then
        curl -sf -X POST "http://127.0.0.1:${http[0]}/v1/_cluster/transfers" \
            -d "{\"node_concurrency\":$KV_HANDOFF_NODE_CONCURRENCY}" > /dev/null
    fi
    # A window left in KV_BENCH_JSON by an earlier run with load would be drawn as this
    # run's: there is none without load.
    if [ "$load" != 1 ]; then rm -f "$json_dir/handoff-$limit-before.json" "$json_dir/handoff-$limit-during.json"; fi
    if [ "$load" = 1 ]; then
        echo "  before the change:"
        bench "$work/before.out" "$json_dir/handoff-$limit-before.json"
        summarize "limit $limit, before" "$work/before.out"
    fi
    start_node 3 --join "127.0.0.1:${http[0]}"
    for _ in $(seq 1 300); do
        curl -s "http://127.0.0.1:${http[0]}/v1/_cluster" | grep -q '"joining"' && break
        sleep 0.1
    done
    plan=$(curl -sf -X POST "http://127.0.0.1:${http[0]}/v1/_cluster/stage" -d '{"change":"join","node":"node3"}' \
        | python3 -c "import json, sys; print(json.load(sys.stdin)['id'])")
    cpu_before=$(node_cpu_ticks)
    faults_before=$(node_faults)
    curl -sf -X POST "http://127.0.0.1:${http[0]}/v1/_cluster/commit" -d "{\"plan\":\"$plan\"}" > /dev/null
    start=$(date +%s.%N)
    if [ "$load" = 1 ]; then
        echo "  during the rebalance (a fourth node joins):"
        bench "$work/during.out" "$json_dir/handoff-$limit-during.json" &
        bench_pid=$!
    fi
    # Polled without starting a Python each time: that took a tenth of the two cores.
    while curl -s "http://127.0.0.1:${http[0]}/v1/_cluster/transfers" | grep -q '"in_progress":true'; do
        sleep 0.1
    done
    took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
    cpu_ticks=$(($(node_cpu_ticks) - cpu_before))
    faults=$(($(node_faults) - faults_before))
    receiver_ticks=$(awk '{ print $14 + $15 }' "/proc/${pids[3]}/stat")
    if [ "$load" = 1 ]; then
        wait "$bench_pid"
        summarize "limit $limit, during" "$work/during.out"
    fi
    bytes=$(json "http://127.0.0.1:${http[3]}/v1/_cluster" "d['counters']['handoff.bytes_received']")
    rows=$(json "http://127.0.0.1:${http[3]}/v1/_cluster" "d['counters']['handoff.rows_received']")
    rate=$(python3 -c "print(f'{$bytes / 1048576 / max($took, 0.1):.1f}')")
    printf '{"limit":"%s","seconds":%s,"bytes":%s,"rows":%s}\n' "$limit" "$took" "$bytes" "$rows" \
        > "$json_dir/handoff-$limit.json"
    window="latency window ${seconds}s"
    [ "$load" = 1 ] || window="no client load"
    cpu=$(python3 -c "t = $cpu_ticks / $(getconf CLK_TCK); r = $receiver_ticks / $(getconf CLK_TCK); print(f'{t:.1f} s of CPU ({r:.1f} s the new node), {1000 * t / max($bytes / 1048576, 1):.0f} ms per MiB, $faults page faults')")
    line="limit $limit: $rows rows, $((bytes / 1048576)) MiB handed off in ${took}s: $rate MiB/s, $cpu ($window)"
    echo "  $line"
    summary+=("$line")
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
done
echo "==> summary"
printf '  %s\n' "${summary[@]}"
