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
    libhiredis-dev libsqlite3-dev sqlite3)

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
    # In the configuration file, so a restart (restart_database_server) keeps them.
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
max_connections = 300
CONF
    as_service_user postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
    as_service_user postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U kv kv
    export KV_TEST_POSTGRES_URL="postgres://kv@127.0.0.1:$port/kv"
    export KV_TEST_POSTGRES_BIN=$bin
    echo "$port" >"$dir/port"
}

start_mariadb() {
    local dir=$KV_TEST_DATABASE_DIR/mariadb port
    port=$(free_port)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown mysql: "$dir"
    as_service_user mysql mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$dir/install.log" 2>&1
    echo "$port" >"$dir/port"
    run_mariadb "$dir"
    wait_for MariaDB mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e "select 1"
    mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e \
        "create database kv; create user kv@'%'; grant all on kv.* to kv@'%';"
    export KV_TEST_MARIADB_URL="mariadb://kv@127.0.0.1:$port/kv"
}

run_mariadb() {
    local dir=$1
    local as_mysql=()
    [ "$(id -u)" -eq 0 ] && as_mysql=(runuser -u mysql --)
    # setsid -f: the server is nobody's child, so no shell ever waits for it.
    setsid -f "${as_mysql[@]}" mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/socket" --port="$(cat "$dir/port")" \
        --bind-address=127.0.0.1 --pid-file="$dir/mariadb.pid" --innodb-flush-log-at-trx-commit=1 \
        --max-connections=300 --max-allowed-packet=64M --log-error="$dir/server.log" </dev/null >/dev/null 2>&1
}

run_redis() {
    local dir=$1
    redis-server --port "$(cat "$dir/port")" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync always \
        --save "" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >/dev/null
}

# Stops one server abruptly (SIGKILL) and starts it again on the same port and data,
# for tests of what the store does while its database is away: restart_database_server
# postgres|mariadb|redis. Needs the KV_TEST_* variables of start_database_servers.
restart_database_server() {
    local dir=$KV_TEST_DATABASE_DIR/$1 port pid
    case $1 in
    postgres)
        pid=$(head -1 "$dir/data/postmaster.pid")
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        # The postmaster's children notice it is gone and exit; wait for the shared memory.
        sleep 1
        as_service_user postgres "$KV_TEST_POSTGRES_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
        ;;
    mariadb)
        pid=$(cat "$dir/mariadb.pid")
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        run_mariadb "$dir"
        wait_for MariaDB mariadb --no-defaults -h 127.0.0.1 -P "$(cat "$dir/port")" -u root -e "select 1"
        ;;
    redis)
        pid=$(cat "$dir/redis.pid")
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        rm -f "$dir/redis.pid"
        run_redis "$dir"
        wait_for Redis redis-cli -p "$(cat "$dir/port")" ping
        ;;
    *)
        echo "restart_database_server: unknown server $1" >&2
        return 2
        ;;
    esac
}

start_redis() {
    local dir=$KV_TEST_DATABASE_DIR/redis port
    port=$(free_port)
    mkdir -p "$dir"
    echo "$port" >"$dir/port"
    run_redis "$dir"
    wait_for Redis redis-cli -p "$port" ping
    export KV_TEST_REDIS_URL="redis://127.0.0.1:$port"
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
    local pidfile pid attempt
    for pidfile in "$dir/mariadb/mariadb.pid" "$dir/redis/redis.pid"; do
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            # Wait for it to go, so its files are not removed under it.
            for attempt in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            # A server that will not stop (Redis refuses when it cannot persist) is
            # killed: its data is thrown away next anyway.
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
    unset KV_TEST_DATABASE_DIR
}
