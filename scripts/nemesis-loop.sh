#!/usr/bin/env bash
# Runs the real-process nemesis (NemesisTests) RUNS times in a row (default 20), for the
# soak runs CI cannot afford. Each run keeps its servers' data directories and logs
# (KV_KEEP_TEST_DATA); a passing run's are removed, a failing run's are kept and named,
# together with the test output, so the failure can be read afterwards. Exits non-zero if
# any run failed. KV_NEMESIS_FAULTS and KV_NEMESIS_ROUNDS pass through to the tests.
#
#   ./scripts/nemesis-loop.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
source scripts/lib/system-packages.sh
ensure_system_packages "${build_packages[@]}"

swift build --build-tests > /dev/null
logs=$(mktemp -d "${TMPDIR:-/tmp}/kv-nemesis-loop-XXXXXX")
failed=0
for run in $(seq 1 "$runs"); do
    before=$(ls -d "${TMPDIR:-/tmp}"/kv-server-test-* 2>/dev/null | sort || true)
    started=$(date +%s)
    if KV_KEEP_TEST_DATA=1 swift test --skip-build --no-parallel --filter NemesisTests \
        > "$logs/run-$run.log" 2>&1; then
        outcome=passed
    else
        outcome=FAILED
        failed=$((failed + 1))
    fi
    after=$(ls -d "${TMPDIR:-/tmp}"/kv-server-test-* 2>/dev/null | sort || true)
    created=$(comm -13 <(echo "$before") <(echo "$after") | grep . || true)
    if [ "$outcome" = passed ]; then
        rm -f "$logs/run-$run.log"
        for directory in $created; do rm -rf "$directory" "$directory.log"; done
    else
        mkdir -p "$logs/run-$run"
        for directory in $created; do mv "$directory" "$directory.log" "$logs/run-$run/" 2>/dev/null || true; done
    fi
    echo "nemesis run $run of $runs: $outcome in $(($(date +%s) - started)) s"
done
echo "nemesis loop: $((runs - failed)) passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "logs and data of the failed runs: $logs"
    exit 1
fi
rm -rf "$logs"
