#!/usr/bin/env bash
# HTTP benchmark, all in one run on this machine, with wrk on 127.0.0.1:
#   1. a bare NIOHTTP1 handler answering 100 fixed bytes (the baseline);
#   2. kv's HTTP layer over a service answering the same 100 bytes (no storage);
#   3. kv server on the memory engine, GET and PUT of 100-byte values;
#   4. kv server on RocksDB (synced writes), GET and PUT of 100-byte values.
# KV_BENCH_SECONDS (default 10) and KV_BENCH_CONNECTIONS (default 64) tune the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" wrk curl python3

swift build -c release --product kv
swift build -c release --product HTTPBaselineServer
bin="$(swift build -c release --show-bin-path)"
seconds="${KV_BENCH_SECONDS:-10}"
connections="${KV_BENCH_CONNECTIONS:-64}"
source scripts/lib/bench-processes.sh
wait_for() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

bare=$(free_port); "$bin/HTTPBaselineServer" bare "$bare" 100 >/dev/null & pids+=($!)
layer=$(free_port); "$bin/HTTPBaselineServer" kv-layer "$layer" 100 >/dev/null & pids+=($!)
memory=$(free_port); "$bin/kv" server --engine memory --port "$memory" --log-level warning >/dev/null 2>&1 & pids+=($!)
rocks=$(free_port); "$bin/kv" server --data "$work/rocksdb" --port "$rocks" --log-level warning >/dev/null 2>&1 & pids+=($!)
for port in "$bare" "$layer" "$memory" "$rocks"; do wait_for "http://127.0.0.1:$port/health"; done

value=$(head -c 100 /dev/zero | tr '\0' 'v')
for port in "$memory" "$rocks"; do
    curl -sf -X PUT "http://127.0.0.1:$port/v1/_tables/bench/t" -d '{"key":["string"]}' >/dev/null
    curl -sf -X PUT "http://127.0.0.1:$port/v1/bench/t/k100" -H 'content-type: application/octet-stream' --data-binary "$value"
done

# PUTs write a new key each time: blind writes to one key would pile up siblings.
cat > "$work/put.lua" <<LUA
counter = 0
body = string.rep("v", 100)
request = function()
    counter = counter + 1
    return wrk.format("PUT", "/v1/bench/t/p" .. counter, {["content-type"] = "application/octet-stream"}, body)
end
LUA

run() {
    local label="$1" url="$2" script="${3:-}"
    local args=(-t1 -c"$connections" -d"${seconds}s" --latency)
    [ -n "$script" ] && args+=(-s "$script")
    local out
    out=$(wrk "${args[@]}" "$url")
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    printf '| %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p99"
}

echo "## HTTP, wrk -t1 -c$connections -d${seconds}s, 100-byte bodies, $(nproc) cores"
echo
echo "| server | requests/s | p50 | p99 |"
echo "| --- | ---: | ---: | ---: |"
run "bare NIOHTTP1, GET" "http://127.0.0.1:$bare/"
run "kv HTTP layer (fixed-answer service), GET row" "http://127.0.0.1:$layer/v1/bench/t/k100"
run "kv server, memory engine, GET row" "http://127.0.0.1:$memory/v1/bench/t/k100"
run "kv server, RocksDB, GET row" "http://127.0.0.1:$rocks/v1/bench/t/k100"
run "bare NIOHTTP1, PUT" "http://127.0.0.1:$bare/" "$work/put.lua"
run "kv server, memory engine, PUT new row" "http://127.0.0.1:$memory/" "$work/put.lua"
run "kv server, RocksDB (fsync per ack), PUT new row" "http://127.0.0.1:$rocks/" "$work/put.lua"
