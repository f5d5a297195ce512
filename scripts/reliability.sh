#!/usr/bin/env bash
# Bad-input reliability check (outside the normal test suite: ~5 minutes on 2 CPU cores). Prints one table:
# inputs tried, tracebacks, 5xx, wrong exits/statuses, partial files per entry point; exit 1 if any is non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" scripts/reliability.py "$@"
