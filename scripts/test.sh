#!/usr/bin/env bash
# Install everything (venv, Python packages, system packages the tests need) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
. .venv/bin/activate
if [ -x scripts/test-system-deps.sh ]; then scripts/test-system-deps.sh; fi
exec python -m pytest -q "$@"
