#!/usr/bin/env bash
# What TLS and tokens cost, all in one run on this machine, on 127.0.0.1: three 3-node
# `kv dev` clusters (RocksDB, N=3, R=W=2): plain, with --auth (a bearer token checked
# on every request), and with --tls --auth (also HTTPS to clients and mutual TLS
# between nodes), loaded by the same wrk runs in turn, round after round:
#   1. puts of fresh keys with 256-byte values (the cluster benchmark's write load);
#   2. gets of one 100-byte row (the HTTP layer's read path).
# wrk keeps its connections open, so TLS handshakes are not what is measured: the
# per-request cost of encryption and of checking a token is.
# KV_BENCH_SECONDS (default 15), KV_BENCH_CLIENTS (default 50), KV_BENCH_ROUNDS
# (default 2) tune the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" wrk curl python3

swift build -c release --product kv
bin="$(swift build -c release --show-bin-path)"
seconds="${KV_BENCH_SECONDS:-15}"
clients="${KV_BENCH_CLIENTS:-50}"
rounds="${KV_BENCH_ROUNDS:-2}"
source scripts/lib/bench-processes.sh

start_cluster() { # name, flags…
    local name="$1"
    shift
    local base
    base=$(free_base)
    "$bin/kv" dev --data "$work/$name" --port "$base" "$@" > "$work/$name.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 600); do grep -q "kv dev cluster" "$work/$name.out" && break; sleep 0.1; done
    grep -q "kv dev cluster" "$work/$name.out" || { cat "$work/$name.out"; exit 1; }
    echo "$base"
}
plain=$(start_cluster plain)
tokens=$(start_cluster tokens --auth)
secure=$(start_cluster secure --tls --auth)
token="$(cat "$work/secure/admin-token")"
tokens_token="$(cat "$work/tokens/admin-token")"
ca="$work/secure/tls/ca.pem"

curl -sf -X PUT "http://127.0.0.1:$plain/v1/_tables/bench/fresh" -d '{"key":["string"]}' > /dev/null
curl -sf -H "Authorization: Bearer $tokens_token" -X PUT "http://127.0.0.1:$tokens/v1/_tables/bench/fresh" \
    -d '{"key":["string"]}' > /dev/null
curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -X PUT \
    "https://127.0.0.1:$secure/v1/_tables/bench/fresh" -d '{"key":["string"]}' > /dev/null
value="$(head -c 100 /dev/zero | tr '\0' v)"
curl -sf -X PUT "http://127.0.0.1:$plain/v1/bench/fresh/row" --data-binary "$value" > /dev/null
curl -sf -H "Authorization: Bearer $tokens_token" -X PUT "http://127.0.0.1:$tokens/v1/bench/fresh/row" \
    --data-binary "$value" > /dev/null
curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -X PUT \
    "https://127.0.0.1:$secure/v1/bench/fresh/row" --data-binary "$value" > /dev/null

summary() { grep -E "Requests/sec| 50%| 99%|Non-2xx|Socket errors" | sed 's/^ */      /'; }
run() { # label, url, extra wrk arguments…
    local label="$1" url="$2"
    shift 2
    echo "    $label"
    wrk -t2 -c"$clients" -d"${seconds}s" --latency "$@" "$url" | summary
}
for round in $(seq 1 "$rounds"); do
    echo "==> round $round: puts of fresh keys, 256-byte values, $clients connections, ${seconds}s"
    run "plain HTTP, no tokens" "http://127.0.0.1:$plain" -s scripts/lib/kv-put-fresh.lua
    run "plain HTTP, tokens" "http://127.0.0.1:$tokens" -s scripts/lib/kv-put-fresh.lua \
        -H "Authorization: Bearer $tokens_token"
    run "TLS (clients and peers) and tokens" "https://127.0.0.1:$secure" -s scripts/lib/kv-put-fresh.lua \
        -H "Authorization: Bearer $token"
    echo "==> round $round: gets of one 100-byte row, $clients connections, ${seconds}s"
    run "plain HTTP, no tokens" "http://127.0.0.1:$plain/v1/bench/fresh/row"
    run "plain HTTP, tokens" "http://127.0.0.1:$tokens/v1/bench/fresh/row" -H "Authorization: Bearer $tokens_token"
    run "TLS and tokens" "https://127.0.0.1:$secure/v1/bench/fresh/row" -H "Authorization: Bearer $token"
done
