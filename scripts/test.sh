#!/usr/bin/env bash
# Runs the whole test suite: format check, a warning-free build, and every test.
# Installs the system packages the store needs when they are missing, so it works on
# a fresh Debian machine with the Swift toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
source scripts/lib/database-servers.sh
ensure_system_packages "${build_packages[@]}" curl python3 python3-venv chromium "${database_server_packages[@]}"

echo "==> swift format lint"
swift format lint --strict --recursive Package.swift Sources Tests

echo "==> OpenAPI document"
# The validator is not packaged by Debian, and Debian's Python refuses system-wide pip
# installs (PEP 668), so it lives in a virtual environment under the ignored .build/.
venv=.build/openapi-venv
if ! "$venv/bin/python" -c "import openapi_spec_validator, yaml" 2>/dev/null; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openapi-spec-validator pyyaml
fi
"$venv/bin/python" -c "
import yaml
from openapi_spec_validator import validate
validate(yaml.safe_load(open('docs/openapi.yaml')))
print('docs/openapi.yaml is valid OpenAPI')"

echo "==> swift build (warnings are errors)"
swift build --build-tests

# The PostgreSQL, MariaDB and Redis engines are tested against real servers: throwaway
# ones on free ports, stopped when this script exits.
start_database_servers

echo "==> swift test"
# One suite at a time: the suites start clusters of processes, kill them and run CPU-bound
# property tests, and on a 2-core machine running them side by side starves the shared
# thread pools until timeouts fire. Serially the tests take about 15 minutes on 2 cores;
# inside a test, the simulator's seed sweeps use every core.
# On failure the failing tests and their issues are printed again at the end, where a
# long log is read first.
test_log=.build/test-output.log
if ! swift test --skip-build --no-parallel 2>&1 | tee "$test_log"; then
    echo "==> failed tests and their issues (repeated from above)"
    grep -E '^✘|^[[:space:]]*↳|^error:|Fatal error' "$test_log" | grep -v '^✘ Test run with' |
        cut -c1-400 | head -80 || true
    grep -E '^✘ Test run with' "$test_log" || true
    exit 1
fi

# Opt-in: a long seed sweep of the simulator on a release build (KV_SIM_SWEEP=100000).
if [ -n "${KV_SIM_SWEEP:-}" ]; then
    echo "==> simulation sweep of $KV_SIM_SWEEP seeds"
    ./scripts/simulation-sweep.sh "$KV_SIM_SWEEP"
fi

# Opt-in: the real-process nemesis in a loop, logs kept on failure (KV_NEMESIS_LOOP=20).
if [ -n "${KV_NEMESIS_LOOP:-}" ]; then
    echo "==> nemesis loop of $KV_NEMESIS_LOOP runs"
    ./scripts/nemesis-loop.sh "$KV_NEMESIS_LOOP"
fi
