#!/usr/bin/env bash
# Cluster benchmark, all in one run on this machine, on 127.0.0.1:
#   1. a 3-node `kv dev` cluster (RocksDB, N=3, R=W=2) and a 3-member etcd cluster,
#      both loaded by wrk with puts of fresh keys and 256-byte values over 100
#      connections: the same client for both;
#   2. `kv bench` on the kv cluster: 100 clients spread over the nodes, 256-byte values,
#      10,000 keys, put-only, 50/50 and get-only, with p50/p99/p99.9 latencies.
# KV_BENCH_SECONDS (default 20) and KV_BENCH_CLIENTS (default 100) tune the runs;
# KV_BENCH_JSON=DIR keeps every row's totals and latency distribution there as JSON.
# KV_BINARY runs another build of `kv` (say, one from an earlier revision) instead of
# this tree's, which is then not built.
set -euo pipefail
if [ -n "${KV_BINARY:-}" ]; then KV_BINARY="$(realpath "$KV_BINARY")"; fi
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" wrk curl python3 etcd-server

if [ -n "${KV_BINARY:-}" ]; then
    kv="$KV_BINARY"
else
    swift build -c release --product kv
    kv="$(swift build -c release --show-bin-path)/kv"
fi
seconds="${KV_BENCH_SECONDS:-20}"
clients="${KV_BENCH_CLIENTS:-100}"
source scripts/lib/bench-processes.sh
base=$(free_base)
"$kv" dev --data "$work/kv" --port "$base" > "$work/kv-dev.out" 2>&1 & pids+=($!)
for _ in $(seq 1 300); do grep -q "kv dev cluster" "$work/kv-dev.out" && break; sleep 0.1; done
grep -q "kv dev cluster" "$work/kv-dev.out" || { cat "$work/kv-dev.out"; exit 1; }
kv_urls="http://127.0.0.1:$base,http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))"

e_client=(); e_peer=(); initial=""
for i in 1 2 3; do
    e_client+=("$(free_port)"); e_peer+=("$(free_port)")
    initial+="${initial:+,}e$i=http://127.0.0.1:${e_peer[$((i - 1))]}"
done
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${e_client[$((i - 1))]}" \
        --advertise-client-urls "http://127.0.0.1:${e_client[$((i - 1))]}" \
        --listen-peer-urls "http://127.0.0.1:${e_peer[$((i - 1))]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${e_peer[$((i - 1))]}" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token bench \
        > "$work/etcd$i.log" 2>&1 & pids+=($!)
done
for _ in $(seq 1 300); do
    curl -s "http://127.0.0.1:${e_client[0]}/health" | grep -q '"health":"true"' && break
    sleep 0.1
done

curl -sf -X PUT "http://127.0.0.1:$base/v1/_tables/bench/fresh" -d '{"key":["string"]}' > /dev/null

# wrk scripts: each request writes a fresh key with a 256-byte value.
cat > "$work/etcd-put.lua" <<'EOF'
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
    return ((data:gsub(".", function(x)
        local r, b = "", x:byte()
        for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
        return r
    end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
        if #x < 6 then return "" end
        local c = 0
        for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
        return chars:sub(c + 1, c + 1)
    end) .. ({"", "==", "="})[#data % 3 + 1])
end
local counter = 0
local value = b64(string.rep("v", 256))
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
    counter = counter + 1
    local body = '{"key":"' .. b64("bench/" .. id .. "-" .. counter) .. '","value":"' .. value .. '"}'
    return wrk.format("POST", "/v3/kv/put", {["content-type"] = "application/json"}, body)
end
EOF

# With KV_BENCH_JSON=DIR, every row also leaves its totals and latency distribution in
# DIR as JSON (wrk-kv.json, wrk-etcd.json, kv-bench-<get ratio>.json), which
# scripts/plot-benchmarks.sh draws.
json_dir="${KV_BENCH_JSON:-$work/json}"
mkdir -p "$json_dir"
cat scripts/lib/kv-put-fresh.lua scripts/lib/wrk-report.lua > "$work/kv-put.lua"
cat scripts/lib/wrk-report.lua >> "$work/etcd-put.lua"

summary() { grep -E "Requests/sec| 50%| 99%|Non-2xx|Socket errors" | sed 's/^ */    /'; }
echo "==> wrk, puts of fresh keys, 256-byte values, $clients connections, ${seconds}s"
echo "  kv (3 nodes, N=3, W=2, every acknowledged write fsynced on 2+ replicas):"
KV_WRK_REPORT="$json_dir/wrk-kv.json" \
    wrk -t2 -c"$clients" -d"${seconds}s" --latency -s "$work/kv-put.lua" "http://127.0.0.1:$base" | summary
echo "  etcd $(etcd --version | head -1 | awk '{print $3}') (3 members):"
KV_WRK_REPORT="$json_dir/wrk-etcd.json" \
    wrk -t2 -c"$clients" -d"${seconds}s" --latency -s "$work/etcd-put.lua" "http://127.0.0.1:${e_client[0]}" | summary

for ratio in 0 0.5 1; do
    echo "==> kv bench, get ratio $ratio"
    "$kv" bench --url "$kv_urls" --clients "$clients" --duration "$seconds" --value-size 256 \
        --keys 10000 --get-ratio "$ratio" --no-progress --output "$json_dir/kv-bench-$ratio.json" 2>&1 \
        | grep -v "^preloaded"
done
