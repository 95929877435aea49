#!/usr/bin/env bash
# Runs the whole test suite: format check, a warning-free build, and every test.
# Installs the system packages the store needs when they are missing, so it works on
# a fresh Debian machine with the Swift toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/system-packages.sh
ensure_system_packages librocksdb-dev curl

echo "==> swift format lint"
swift format lint --strict --recursive Package.swift Sources Tests

echo "==> OpenAPI document"
if ! python3 -c "import openapi_spec_validator, yaml" 2>/dev/null; then
    python3 -m pip install --quiet openapi-spec-validator pyyaml
fi
python3 -c "
import yaml
from openapi_spec_validator import validate
validate(yaml.safe_load(open('docs/openapi.yaml')))
print('docs/openapi.yaml is valid OpenAPI')"

echo "==> swift build (warnings are errors)"
swift build --build-tests

echo "==> swift test"
swift test --skip-build
