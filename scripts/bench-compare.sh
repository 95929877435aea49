#!/usr/bin/env bash
# Side-by-side cluster benchmark of this working tree against an earlier revision, in one
# run on this machine: builds `kv` in release mode for both (the revision in a git
# worktree under .build-compare/), then, in alternating rounds, starts a 3-node `kv dev`
# cluster (RocksDB, N=3, R=W=2) from each and loads it with this tree's `kv bench`: 100
# clients, 256-byte values, 10,000 keys, put-only, 50/50 and get-only.
#
#   ./scripts/bench-compare.sh REVISION
#
# KV_BENCH_SECONDS (default 15), KV_BENCH_CLIENTS (default 100) and KV_BENCH_ROUNDS
# (default 2) tune the runs; KV_BENCH_GET_RATIOS (default "0 0.5 1") picks the loads, so
# that a suspected difference in one of them can be measured over more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

revision=${1:?usage: scripts/bench-compare.sh REVISION}
seconds="${KV_BENCH_SECONDS:-15}"
clients="${KV_BENCH_CLIENTS:-100}"
rounds="${KV_BENCH_ROUNDS:-2}"
get_ratios="${KV_BENCH_GET_RATIOS:-0 0.5 1}"

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" curl python3
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
