#!/usr/bin/env bash
# Storage engine benchmark: builds StorageBenchmark in release mode, runs it for the
# memory and RocksDB engines, then compares RocksDB configurations (compression and
# Bloom filters). Everything goes to standard output; nothing is written to the
# repository. Extra arguments (for example --keys 200000) are passed to every run.
set -euo pipefail

cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}"

swift build -c release --product StorageBenchmark
benchmark="$(swift build -c release --show-bin-path)/StorageBenchmark"

echo "## Machine"
echo
echo "- cores: $(nproc)"
echo "- memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- kernel: $(uname -sr)"
echo "- RocksDB: $(dpkg-query -W -f='${Version}' librocksdb-dev)"
echo "- temporary directory file system: $(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2 }')"
echo

echo "## Both engines, default settings"
echo
"$benchmark" --engine all "$@"
echo

for compression in none lz4 zstd; do
    echo "## RocksDB, compression $compression"
    echo
    "$benchmark" --engine rocksdb --compression "$compression" "$@"
    echo
done

for bloom in 0 10; do
    echo "## RocksDB, Bloom filter bits per key $bloom"
    echo
    "$benchmark" --engine rocksdb --bloom-bits "$bloom" "$@"
    echo
done
