#!/usr/bin/env bash
# The engines on databases, side by side with each database's own benchmark tool in one
# run (docs/benchmarks.md, "Engines on databases"):
#   1. StorageBenchmark per engine: synced single-row puts (1 and 8 threads), batched
#      puts, gets and a scan, 100-byte values.
#   2. The database's own tool on the same server, same shape: pgbench with a
#      single-row upsert at synchronous_commit=on, redis-benchmark SET/GET with
#      appendfsync always, mariadb-slap with a single-row upsert.
#   3. kv bench through a 3-node kv dev cluster on each engine (N=3, R=W=2).
#   4. kvlayer's throughput method: 1 MiB items written then read by 25 concurrent
#      workers, MB/s, for the store on each engine and for the bare Redis server beside
#      it, loaded by the same client: redis-benchmark, through each cluster's RESP
#      listener (and kv bench over HTTP for comparison).
# Usage: scripts/bench-databases.sh [seconds per load, default 10] [keys, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
keys=${2:-20000}

source scripts/lib/system-packages.sh
source scripts/lib/database-servers.sh
ensure_system_packages "${build_packages[@]}" curl python3 "${database_server_packages[@]}"

swift build -c release --product StorageBenchmark >&2
swift build -c release --product kv >&2
bin="$(swift build -c release --show-bin-path)"

start_database_servers
work=$(mktemp -d)
dev_pid=""
finish() {
    [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
    rm -rf "$work"
    stop_database_servers
}
trap finish EXIT

url_of() {
    case $1 in
    postgres) echo "$KV_TEST_POSTGRES_URL" ;;
    mariadb) echo "$KV_TEST_MARIADB_URL" ;;
    redis) echo "$KV_TEST_REDIS_URL" ;;
    *) echo "" ;;
    esac
}
pg_port=${KV_TEST_POSTGRES_URL##*:}
pg_port=${pg_port%%/*}
maria_port=${KV_TEST_MARIADB_URL##*:}
maria_port=${maria_port%%/*}
redis_port=${KV_TEST_REDIS_URL##*:}

echo "## Machine"
echo
echo "- cores: $(nproc); CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- PostgreSQL $(psql --version | awk '{print $3}'), MariaDB $(mariadbd --version | awk '{print $3}'), Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2), SQLite $(sqlite3 --version | awk '{print $1}')"
echo "- temporary directory file system: $(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2 }')"
echo

echo "## 1. Storage benchmark, $keys keys"
echo
for engine in sqlite postgres mariadb redis rocksdb; do
    url=$(url_of "$engine")
    "$bin/StorageBenchmark" --engine "$engine" ${url:+--url "$url"} --keys "$keys" | grep -E "^\| $engine|^\| engine" || true
done
echo

echo "## 2. The databases' own tools, single-row synced writes and reads"
echo
cat >"$work/upsert.sql" <<'SQL'
\set k random(1, 1000000)
INSERT INTO pgbench_kv (k, v) VALUES (:k, repeat('v', 100)) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;
SQL
cat >"$work/select.sql" <<'SQL'
\set k random(1, 20000)
SELECT v FROM pgbench_kv WHERE k = :k;
SQL
psql -q -h 127.0.0.1 -p "$pg_port" -U kv kv -c "CREATE TABLE pgbench_kv (k int PRIMARY KEY, v text)"
psql -q -h 127.0.0.1 -p "$pg_port" -U kv kv -c "INSERT INTO pgbench_kv SELECT g, repeat('v', 100) FROM generate_series(1, 20000) g"
for clients in 1 8; do
    echo "- pgbench upsert, $clients clients: $("$KV_TEST_POSTGRES_BIN/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U kv -c "$clients" -j "$clients" -T "$seconds" -f "$work/upsert.sql" kv 2>/dev/null | awk '/^tps/ { print int($3) " tps" }')"
done
echo "- pgbench select, 8 clients: $("$KV_TEST_POSTGRES_BIN/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U kv -c 8 -j 8 -T "$seconds" -f "$work/select.sql" kv 2>/dev/null | awk '/^tps/ { print int($3) " tps" }')"
for clients in 1 8; do
    echo "- redis-benchmark SET/GET, 100 bytes, $clients clients: $(redis-benchmark -p "$redis_port" -q -t set,get -d 100 -c "$clients" -n $((keys * 2)) -r 1000000 | tr "\r" "\n" | grep "requests per second" | awk '{print $1 " " int($2) "/s"}' | paste -sd' ')"
done
mariadb --no-defaults -h 127.0.0.1 -P "$maria_port" -u kv kv -e "CREATE TABLE slap_kv (k INT PRIMARY KEY, v VARBINARY(200)) ENGINE=InnoDB"
for clients in 1 8; do
    echo "- mariadb-slap upsert, $clients clients: $(mariadb-slap --no-defaults -h 127.0.0.1 -P "$maria_port" -u kv --create-schema=kv --concurrency="$clients" --iterations=1 --number-of-queries=$((keys / 4)) \
        --query="INSERT INTO slap_kv VALUES (FLOOR(RAND()*1000000), REPEAT('v', 100)) ON DUPLICATE KEY UPDATE v = VALUES(v)" 2>/dev/null |
        awk -v q=$((keys / 4)) '/Average number of seconds/ { printf "%d queries/s", q / $9 }')"
done
echo

echo "## 3. kv bench through a 3-node cluster on each engine, ${seconds}s, 16 clients, 256-byte values"
echo
start_dev() {
    local engine=$1 port=$2 url
    url=$(url_of "$engine")
    "$bin/kv" dev --engine "$engine" ${url:+--storage-url "$url?table=dev$port"} --port "$port" --resp --data "$work/dev-$engine" >"$work/dev-$engine.log" 2>&1 &
    dev_pid=$!
    for _ in $(seq 1 300); do
        grep -q "kv dev cluster" "$work/dev-$engine.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "kv dev on $engine did not start:" >&2
    cat "$work/dev-$engine.log" >&2
    return 1
}
stop_dev() {
    kill -INT "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
    dev_pid=""
}
port=21700
for engine in sqlite postgres mariadb redis rocksdb; do
    start_dev "$engine" "$port"
    urls="http://127.0.0.1:$port,http://127.0.0.1:$((port + 1)),http://127.0.0.1:$((port + 2))"
    for ratio in 0 1; do
        echo "- $engine, get ratio $ratio: $("$bin/kv" bench --url "$urls" --clients 16 --duration "$seconds" --value-size 256 \
            --keys 10000 --get-ratio "$ratio" --no-progress 2>&1 | grep -E "^total" | sed "s/  */ /g")"
    done
    # kvlayer's method: 1 MiB items, 25 workers, writes then reads; first with the same
    # client as the bare Redis server below (redis-benchmark through the RESP listener).
    echo "- $engine, 1 MiB items, 25 clients, redis-benchmark through RESP: $(redis-benchmark -p $((port + 3000)) -q -t set,get -d 1048576 -c 25 -n 2000 -r 200 | tr "\r" "\n" | grep "requests per second" | awk '{printf "%s %d/s (%d MB/s) ", $1, $2, $2 * 1.048576}')"
    for ratio in 0 1; do
        echo "- $engine, 1 MiB items, 25 workers, get ratio $ratio: $("$bin/kv" bench --url "$urls" --clients 25 --duration "$seconds" \
            --value-size 1048576 --keys 200 --get-ratio "$ratio" --table bench/large --no-progress 2>&1 | grep -E "^total" | sed "s/  */ /g")"
    done
    stop_dev
    port=$((port + 10))
done
echo
echo "- bare redis-server, 1 MiB items, 25 clients: $(redis-benchmark -p "$redis_port" -q -t set,get -d 1048576 -c 25 -n 2000 -r 200 | tr "\r" "\n" | grep "requests per second" | awk '{printf "%s %d/s (%d MB/s) ", $1, $2, $2 * 1.048576}')"
