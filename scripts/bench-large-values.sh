#!/usr/bin/env bash
# Large values against nginx, all in one run on this machine, on 127.0.0.1: a value of
# KV_BENCH_VALUE_MIB (default 1024) MiB is PUT and then GET with curl, round after
# round, alternating between
#   - nginx accepting the file (WebDAV PUT) and serving it (sendfile), as minikeyvalue's
#     volume servers do;
#   - one `kv server` (a table with n=1);
#   - a 3-node `kv dev` cluster (N=3, W=2), through its first node.
# Each transfer's time comes from curl; each kv node's peak resident memory during the
# transfer is sampled every 50 ms against its resident memory before it.
# KV_BENCH_ROUNDS (default 2) sets the rounds. KV_BINARY runs another build of `kv`
# (say, one from an earlier revision) instead of this tree's, which is then not built.
set -euo pipefail
if [ -n "${KV_BINARY:-}" ]; then KV_BINARY="$(realpath "$KV_BINARY")"; fi
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}" nginx curl python3

if [ -n "${KV_BINARY:-}" ]; then
    kv="$KV_BINARY"
else
    swift build -c release --product kv
    kv="$(swift build -c release --show-bin-path)/kv"
fi
mib="${KV_BENCH_VALUE_MIB:-1024}"
rounds="${KV_BENCH_ROUNDS:-2}"
source scripts/lib/bench-processes.sh

value="$work/value"
head -c "$((mib << 20))" /dev/urandom > "$value"
digest="$(sha256sum "$value" | cut -c1-64)"

# nginx: PUT stores under root, GET serves it back.
nginx_port=$(free_port)
mkdir -p "$work/nginx/root" "$work/nginx/tmp" "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<CONF
user root;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_max_body_size 0;
    client_body_temp_path $work/nginx/tmp;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/nginx/root;
        location / { dav_methods PUT DELETE; create_full_put_path on; }
    }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
pids+=($!)

# One node, and a 3-node cluster.
single_port=$(free_port)
"$kv" server --data "$work/single" --port "$single_port" --peer-port "$(free_port)" --log-level warning \
    > "$work/single.out" 2>&1 &
single_pid=$!
pids+=("$single_pid")
cluster_base=$(free_base)
"$kv" dev --data "$work/cluster" --port "$cluster_base" > "$work/cluster.out" 2>&1 &
dev_pid=$!
pids+=("$dev_pid")
for _ in $(seq 1 600); do grep -q "kv dev cluster" "$work/cluster.out" && break; sleep 0.1; done
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$single_port/health" > /dev/null && break; sleep 0.1; done
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$nginx_port/" > /dev/null 2>&1 && break; sleep 0.1; done
cluster_pids=$(pgrep -P "$dev_pid" | tr '\n' ' ')
curl -sf -X PUT "http://127.0.0.1:$single_port/v1/_tables/bench/files" \
    -d '{"key":["string"],"defaults":{"n":1,"r":1,"w":1,"dw":1}}' > /dev/null
curl -sf -X PUT "http://127.0.0.1:$cluster_base/v1/_tables/bench/files" -d '{"key":["string"]}' > /dev/null

resident() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Samples the peak resident KiB of the given pids until the file $work/stop appears.
sample_peaks() {
    local -A peak
    local pid
    for pid in "$@"; do peak[$pid]=$(resident "$pid"); done
    while [ ! -e "$work/stop" ]; do
        for pid in "$@"; do
            local now
            now=$(resident "$pid")
            [ "$now" -gt "${peak[$pid]}" ] && peak[$pid]=$now
        done
        sleep 0.05
    done
    for pid in "$@"; do echo -n "${peak[$pid]} "; done
    echo
}
# Runs one transfer: label, the kv pids to watch (quoted, may be empty), curl arguments.
transfer() {
    local label="$1" watch="$2"
    shift 2
    local before=() pid
    for pid in $watch; do before+=("$(resident "$pid")"); done
    rm -f "$work/stop"
    # shellcheck disable=SC2086
    sample_peaks $watch > "$work/peaks" &
    local sampler=$!
    local seconds
    seconds=$(curl -sf -o "$work/out" -w "%{time_total}" "$@")
    touch "$work/stop"
    wait "$sampler"
    local rate
    rate=$(python3 -c "print(f'{$mib / $seconds:.0f}')")
    local growth=""
    if [ -n "$watch" ]; then
        read -r -a peaks < "$work/peaks"
        growth="  RSS growth MiB:"
        local index=0
        for pid in $watch; do
            growth+=" $(((peaks[index] - before[index]) / 1024))"
            index=$((index + 1))
        done
    fi
    printf "    %-28s %7.2f s  %5s MiB/s%s\n" "$label" "$seconds" "$rate" "$growth"
}
check() {
    [ "$(sha256sum "$work/out" | cut -c1-64)" = "$digest" ] || { echo "    $1: wrong bytes"; exit 1; }
}

echo "==> $mib MiB, $rounds rounds (nginx, one kv node with n=1, a 3-node kv cluster with N=3)"
for round in $(seq 1 "$rounds"); do
    echo "  round $round"
    transfer "nginx PUT" "" -X PUT -T "$value" "http://127.0.0.1:$nginx_port/value$round"
    transfer "kv node PUT" "$single_pid" -X PUT -T "$value" "http://127.0.0.1:$single_port/v1/bench/files/v$round"
    transfer "kv cluster PUT" "$cluster_pids" -X PUT -T "$value" \
        "http://127.0.0.1:$cluster_base/v1/bench/files/v$round"
    transfer "nginx GET" "" "http://127.0.0.1:$nginx_port/value$round"
    check "nginx GET"
    transfer "kv node GET" "$single_pid" "http://127.0.0.1:$single_port/v1/bench/files/v$round"
    check "kv node GET"
    transfer "kv cluster GET" "$cluster_pids" "http://127.0.0.1:$cluster_base/v1/bench/files/v$round"
    check "kv cluster GET"
done
