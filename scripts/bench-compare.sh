#!/usr/bin/env bash
# Side-by-side benchmark of this working tree against an earlier revision, in one run on
# this machine: builds `kv` in release mode for both (the revision in a git worktree under
# .build-compare/), then measures them in alternating rounds.
#
#   ./scripts/bench-compare.sh REVISION
#
# KV_BENCH_MODE picks what is measured:
#   cluster (default)  a 3-node `kv dev` cluster (RocksDB, N=3, R=W=2) from each, loaded
#                      with this tree's `kv bench`: 100 clients, 256-byte values, 10,000
#                      keys, put-only, 50/50 and get-only;
#   http-get           one `kv server` (RocksDB) from each and the bare NIOHTTP1 handler,
#                      each GET of one 100-byte row with `wrk -t1 -c64`, the ratio to the
#                      bare handler taken within each round (the HTTP benchmark's target).
#
# KV_BENCH_SECONDS (default 15), KV_BENCH_CLIENTS (default 100; for http-get the wrk
# connections, default 64) and KV_BENCH_ROUNDS (default 2) tune the runs;
# KV_BENCH_GET_RATIOS (default "0 0.5 1") picks the cluster loads, so that a suspected
# difference in one of them can be measured over more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

revision=${1:?usage: scripts/bench-compare.sh REVISION}
seconds="${KV_BENCH_SECONDS:-15}"
mode="${KV_BENCH_MODE:-cluster}"
case "$mode" in
    cluster) clients="${KV_BENCH_CLIENTS:-100}" ;;
    http-get) clients="${KV_BENCH_CLIENTS:-64}" ;;
    *) echo "KV_BENCH_MODE is cluster or http-get, not $mode" >&2; exit 2 ;;
esac
rounds="${KV_BENCH_ROUNDS:-2}"
get_ratios="${KV_BENCH_GET_RATIOS:-0 0.5 1}"

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" curl python3 wrk
source scripts/lib/bench-processes.sh

base_tree=.build-compare/tree
rm -rf "$base_tree"
git worktree prune
git worktree add --detach "$base_tree" "$revision" > /dev/null
trap 'cleanup; git worktree remove --force "$base_tree" 2>/dev/null || true' EXIT
(cd "$base_tree" && swift build -c release --product kv --scratch-path ../build > /dev/null)
swift build -c release --product kv > /dev/null
declare -A binaries=(
    [base]="$(cd "$base_tree" && swift build -c release --scratch-path ../build --show-bin-path)/kv"
    [head]="$(swift build -c release --show-bin-path)/kv"
)
client="${binaries[head]}"

if [ "$mode" = http-get ]; then
    swift build -c release --product HTTPBaselineServer > /dev/null
    declare -A ports=([bare]=$(free_port) [base]=$(free_port) [head]=$(free_port))
    "$(swift build -c release --show-bin-path)/HTTPBaselineServer" bare "${ports[bare]}" 100 > /dev/null & pids+=($!)
    value=$(head -c 100 /dev/zero | tr '\0' 'v')
    for side in base head; do
        "${binaries[$side]}" server --data "$work/$side" --port "${ports[$side]}" --peer-port "$(free_port)" \
            --log-level warning > "$work/$side.out" 2>&1 & pids+=($!)
        wait_for_url "http://127.0.0.1:${ports[$side]}/health" || { cat "$work/$side.out" >&2; exit 1; }
        curl -sf -X PUT "http://127.0.0.1:${ports[$side]}/v1/_tables/bench/t" -d '{"key":["string"]}' > /dev/null
        curl -sf -X PUT "http://127.0.0.1:${ports[$side]}/v1/bench/t/k100" \
            -H 'content-type: application/octet-stream' --data-binary "$value" > /dev/null
    done
    wait_for_url "http://127.0.0.1:${ports[bare]}/"
    declare -A paths=([bare]=/ [base]=/v1/bench/t/k100 [head]=/v1/bench/t/k100)
    echo "## GET of a 100-byte row, $(git rev-parse --short "$revision") (base) against the working tree at $(git rev-parse --short HEAD) (head)"
    echo
    echo "- cores: $(nproc); wrk -t1 -c$clients -d${seconds}s; requests/s, p99 in parentheses"
    echo
    echo "| round | bare handler | base | head | base / bare | head / bare |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for round in $(seq 1 "$rounds"); do
        declare -A rate=() p99=()
        for side in bare base head; do
            out=$(wrk -t1 -c"$clients" -d"${seconds}s" --latency "http://127.0.0.1:${ports[$side]}${paths[$side]}")
            # Error answers are not throughput.
            if grep -q "Non-2xx" <<< "$out"; then echo "$side answered errors: $out" >&2; exit 1; fi
            rate[$side]=$(awk '/Requests\/sec/ { print $2 }' <<< "$out")
            p99[$side]=$(awk '$1 == "99%" { print $2 }' <<< "$out")
        done
        awk -v round="$round" -v bare="${rate[bare]}" -v base="${rate[base]}" -v head="${rate[head]}" \
            -v bare99="${p99[bare]}" -v base99="${p99[base]}" -v head99="${p99[head]}" 'BEGIN {
                printf "| %s | %.0f (%s) | %.0f (%s) | %.0f (%s) | %.2f× | %.2f× |\n", round, bare, bare99,
                    base, base99, head, head99, base / bare, head / bare }'
    done
    exit 0
fi

echo "## $(git rev-parse --short "$revision") (base) against the working tree at $(git rev-parse --short HEAD) (head)"
echo
echo "- cores: $(nproc); $clients clients; ${seconds} s per run; 256-byte values; 10,000 keys"
echo
for round in $(seq 1 "$rounds"); do
    for side in base head; do
        port=$(free_base)
        data="$work/$side-$round"
        "${binaries[$side]}" dev --data "$data" --port "$port" > "$data.out" 2>&1 &
        pid=$!
        pids+=($pid)
        for _ in $(seq 1 300); do grep -q "kv dev cluster" "$data.out" 2>/dev/null && break; sleep 0.1; done
        grep -q "kv dev cluster" "$data.out" || { cat "$data.out"; exit 1; }
        urls="http://127.0.0.1:$port,http://127.0.0.1:$((port + 1)),http://127.0.0.1:$((port + 2))"
        for ratio in $get_ratios; do
            echo "### round $round, $side, get ratio $ratio"
            "$client" bench --url "$urls" --clients "$clients" --duration "$seconds" --value-size 256 \
                --keys 10000 --get-ratio "$ratio" --no-progress 2>&1 | grep -v "^preloaded"
        done
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
