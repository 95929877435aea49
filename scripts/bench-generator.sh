#!/usr/bin/env bash
# `kv bench` against wrk, in one run on this machine: does the load generator measure
# the store, or itself? Both load the same servers the same way, in alternating rounds:
#   gets, node     one `kv server` (RocksDB): GETs of random keys among 10,000 preloaded
#                  256-byte rows;
#   gets, cluster  the same through node 0 of a 3-node `kv dev` cluster (N=3, R=W=2);
#   puts, cluster  PUTs of 256-byte values through node 0 into a new table per round: wrk
#                  writes fresh keys, kv bench keys drawn from 1,000,000 without
#                  preloading (nearly all fresh too).
# Each runs with one connection per client and one request in flight on each. A row
# gives requests/s, p99 and the generator's own CPU per request: the user and system
# time of its process over the run, divided by the requests it made.
# KV_BENCH_SECONDS (default 10), KV_BENCH_CLIENTS (default 64) and KV_BENCH_ROUNDS
# (default 2) tune the runs; KV_BENCH_OTHER_KV=PATH adds a third generator, the bench of
# another `kv` binary (an earlier build, say).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" wrk curl python3 time

swift build -c release --product kv
bin="$(swift build -c release --show-bin-path)"
seconds="${KV_BENCH_SECONDS:-10}"
clients="${KV_BENCH_CLIENTS:-64}"
rounds="${KV_BENCH_ROUNDS:-2}"
other="${KV_BENCH_OTHER_KV:-}"
source scripts/lib/bench-processes.sh

node_port=$(free_port)
"$bin/kv" server --data "$work/node" --port "$node_port" --peer-port "$(free_port)" --log-level warning \
    > "$work/node.out" 2>&1 & pids+=($!)
base=$(free_base)
"$bin/kv" dev --data "$work/cluster" --port "$base" > "$work/dev.out" 2>&1 & pids+=($!)
wait_for_url "http://127.0.0.1:$node_port/health" || { cat "$work/node.out" >&2; exit 1; }
for _ in $(seq 1 300); do grep -q "kv dev cluster" "$work/dev.out" && break; sleep 0.1; done
grep -q "kv dev cluster" "$work/dev.out" || { cat "$work/dev.out" >&2; exit 1; }
declare -A urls=([node]="http://127.0.0.1:$node_port" [cluster]="http://127.0.0.1:$base")

for target in node cluster; do
    "$bin/kv" bench --url "${urls[$target]}" --clients 16 --duration 0.5 --keys 10000 --get-ratio 1 \
        --no-progress > /dev/null 2>&1
done
for round in $(seq 1 "$rounds"); do
    curl -sf -X PUT "${urls[cluster]}/v1/_tables/bench/fresh$round" -d '{"key":["string"]}' > /dev/null
    sed "s|/v1/bench/fresh/|/v1/bench/fresh$round/|" scripts/lib/kv-put-fresh.lua > "$work/put$round.lua"
done

cat > "$work/get.lua" <<'EOF'
request = function() return wrk.format("GET", "/v1/bench/kv/" .. math.random(0, 9999)) end
EOF

# run GENERATOR WORKLOAD TARGET ROUND: prints "requests/s p99-ms cpu-µs-per-request";
# fails (and the script stops) when the generator does.
run() {
    local generator=$1 workload=$2 target=$3 round=$4 out="$work/run.out" cpu="$work/run.cpu"
    rm -f "$out" "$cpu" "$work/run.json"
    if [ "$generator" = wrk ]; then
        local script="$work/get.lua"
        [ "$workload" = puts ] && script="$work/put$round.lua"
        /usr/bin/time -f "%U %S" -o "$cpu" \
            wrk -t1 -c"$clients" -d"${seconds}s" --latency -s "$script" "${urls[$target]}" > "$out" \
            || { echo "wrk failed: $(cat "$out")" >&2; return 1; }
        python3 - "$out" "$cpu" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
requests, duration, unit = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text).groups()
requests = int(requests)
seconds = float(duration) * {"ms": 0.001, "s": 1, "m": 60}[unit]
value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", text, re.M).groups()
p99 = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
print(f"{requests / seconds:.0f} {p99:.2f} {(user + system) * 1e6 / requests:.1f}")
EOF
    else
        local binary="$bin/kv" arguments=(--get-ratio 1 --keys 10000)
        [ "$generator" = other ] && binary="$other"
        [ "$workload" = puts ] && arguments=(--get-ratio 0 --keys 1000000 --table "bench/many$round")
        /usr/bin/time -f "%U %S" -o "$cpu" \
            "$binary" bench --url "${urls[$target]}" --clients "$clients" --duration "$seconds" \
            --value-size 256 --no-preload --no-progress "${arguments[@]}" --output "$work/run.json" > "$out" 2>&1 \
            || { echo "kv bench failed: $(cat "$out")" >&2; return 1; }
        python3 - "$work/run.json" "$cpu" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
kind = report["gets"] if report["gets"]["count"] else report["puts"]
requests = report["gets"]["count"] + report["puts"]["count"] + sum(report["errors"].values())
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
print(f"{kind['per_second']:.0f} {kind['p99'] / 1000:.2f} {(user + system) * 1e6 / max(1, requests):.1f}")
EOF
    fi
}

generators=(wrk kv)
[ -n "$other" ] && generators+=(other)
echo "| load | round | generator | requests/s | p99 ms | generator CPU µs/request |"
echo "| --- | ---: | --- | ---: | ---: | ---: |"
for round in $(seq 1 "$rounds"); do
    for load in "gets node" "gets cluster" "puts cluster"; do
        read -r workload target <<< "$load"
        order=("${generators[@]}")
        # Alternate which generator goes first, so that drift favours neither.
        if [ $((round % 2)) -eq 0 ]; then order=($(printf '%s\n' "${generators[@]}" | tac)); fi
        for generator in "${order[@]}"; do
            result=$(run "$generator" "$workload" "$target" "$round") || exit 1
            read -r rate p99 cpu <<< "$result"
            name=$generator
            [ "$generator" = kv ] && name="kv bench"
            [ "$generator" = other ] && name="kv bench ($other)"
            echo "| $workload, $target | $round | $name | $rate | $p99 | $cpu |"
        done
    done
done
