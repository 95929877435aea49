#!/usr/bin/env bash
# libpq against postgres-nio, side by side in one run, for the engine on PostgreSQL
# (docs/benchmarks.md, "PostgreSQL drivers"): a synced single-row upsert and a point
# read, from 1 and 8 blocking threads as the engine protocol calls a driver, and
# postgres-nio natively from tasks. The drivers live in a package of their own
# (benchmarks/postgres-drivers), so the store itself never builds postgres-nio.
# Usage: scripts/bench-postgres-drivers.sh [seconds per measurement, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-5}

source scripts/lib/system-packages.sh
source scripts/lib/database-servers.sh
ensure_system_packages libpq-dev postgresql

swift build -c release --package-path benchmarks/postgres-drivers >&2
bin="$(swift build -c release --package-path benchmarks/postgres-drivers --show-bin-path)"

KV_TEST_DATABASE_DIR=$(mktemp -d /tmp/kv-databases.XXXXXX)
export KV_TEST_DATABASE_DIR
chmod 755 "$KV_TEST_DATABASE_DIR"
trap stop_database_servers EXIT
start_postgres

echo "## Machine"
echo
echo "- cores: $(nproc); CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- PostgreSQL $(psql --version | awk '{print $3}') (fsync and synchronous_commit on), libpq $(pkg-config --modversion libpq), postgres-nio $(grep -A8 '"identity" : "postgres-nio"' benchmarks/postgres-drivers/Package.resolved | sed -n 's/.*"version" : "\(.*\)".*/\1/p')"
echo
echo "## 100-byte values, 10,000 rows, ${seconds} s per measurement"
echo
"$bin/PostgresDrivers" --url "$KV_TEST_POSTGRES_URL" --seconds "$seconds"
