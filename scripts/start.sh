#!/usr/bin/env bash
# Starts a local cluster of three kv nodes on 127.0.0.1 (HTTP ports 7700-7702, peer
# ports 8700-8702) with RocksDB under ./kv-dev, and prints where to reach it. Installs
# the system packages it needs and builds in release mode first. Extra arguments go to
# `kv dev` (see `.build/release/kv dev --help`); Ctrl-C stops every node cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}"

echo "==> building kv (release; the first build takes a few minutes)"
swift build -c release --product kv
exec .build/release/kv dev "$@"
