# Shared by the scripts: starts throwaway PostgreSQL, MariaDB and Redis servers for the
# storage engines' tests and benchmarks, each on a free loopback port with its data in
# a temporary directory, and stops them again.
#
#   source scripts/lib/database-servers.sh
#   start_database_servers        # exports KV_TEST_POSTGRES_URL, KV_TEST_MARIADB_URL,
#                                 # KV_TEST_REDIS_URL and KV_TEST_DATABASE_DIR
#   stop_database_servers         # (start_database_servers also arranges it on exit)
#
# Every server is configured so a commit is durable when acknowledged: PostgreSQL with
# fsync and synchronous_commit on, InnoDB with innodb_flush_log_at_trx_commit=1, Redis
# with appendonly and appendfsync always. The engines refuse to start otherwise.

database_server_packages=(postgresql mariadb-server redis-server redis-tools libpq-dev libmariadb-dev
    libhiredis-dev libsqlite3-dev)

# A TCP port nobody listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as an unprivileged user when we are root: PostgreSQL refuses to run as
# root, and the data directories must belong to the server's user.
as_service_user() {
    local user=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

wait_for() {
    local what=$1
    shift
    local attempt
    for attempt in $(seq 1 150); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "error: $what did not come up; its log is in $KV_TEST_DATABASE_DIR" >&2
    return 1
}

start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    local dir=$KV_TEST_DATABASE_DIR/postgres port
    port=$(free_port)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_service_user postgres "$bin/initdb" -D "$dir/data" -U kv --auth=trust -E UTF8 >"$dir/initdb.log"
    as_service_user postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300" \
        start >/dev/null
    as_service_user postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U kv kv
    export KV_TEST_POSTGRES_URL="postgres://kv@127.0.0.1:$port/kv"
    export KV_TEST_POSTGRES_BIN=$bin
}

start_mariadb() {
    local dir=$KV_TEST_DATABASE_DIR/mariadb port
    port=$(free_port)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown mysql: "$dir"
    as_service_user mysql mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$dir/install.log" 2>&1
    as_service_user mysql mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/socket" --port="$port" \
        --bind-address=127.0.0.1 --pid-file="$dir/mariadb.pid" --innodb-flush-log-at-trx-commit=1 \
        --max-connections=300 --max-allowed-packet=64M --log-error="$dir/server.log" >/dev/null 2>&1 &
    wait_for MariaDB mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e "select 1"
    mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e \
        "create database kv; create user kv@'%'; grant all on kv.* to kv@'%';"
    export KV_TEST_MARIADB_URL="mariadb://kv@127.0.0.1:$port/kv"
}

start_redis() {
    local dir=$KV_TEST_DATABASE_DIR/redis port
    port=$(free_port)
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync always \
        --save "" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >/dev/null
    wait_for Redis redis-cli -p "$port" ping
    export KV_TEST_REDIS_URL="redis://127.0.0.1:$port"
    export KV_TEST_REDIS_DIR=$dir
}

start_database_servers() {
    ensure_system_packages "${database_server_packages[@]}"
    KV_TEST_DATABASE_DIR=$(mktemp -d /tmp/kv-databases.XXXXXX)
    export KV_TEST_DATABASE_DIR
    chmod 755 "$KV_TEST_DATABASE_DIR"
    trap stop_database_servers EXIT
    echo "==> starting PostgreSQL, MariaDB and Redis under $KV_TEST_DATABASE_DIR"
    start_postgres
    start_mariadb
    start_redis
}

stop_database_servers() {
    local dir=${KV_TEST_DATABASE_DIR:-}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -d "$dir/postgres/data" ]; then
        as_service_user postgres "$KV_TEST_POSTGRES_BIN/pg_ctl" -D "$dir/postgres/data" -m fast stop >/dev/null 2>&1 || true
    fi
    local pidfile
    for pidfile in "$dir/mariadb/mariadb.pid" "$dir/redis/redis.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    sleep 1
    rm -rf "$dir"
    unset KV_TEST_DATABASE_DIR
}
