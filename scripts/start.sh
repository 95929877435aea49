#!/usr/bin/env bash
# Starts a kv node on 127.0.0.1:7700 with RocksDB under ./kv-data, and prints where to
# reach it. Installs the system packages it needs and builds in release mode first.
# Extra arguments go to `kv server` (see `.build/release/kv server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages librocksdb-dev

echo "==> building kv (release; the first build takes a few minutes)"
swift build -c release --product kv
exec .build/release/kv server "$@"
