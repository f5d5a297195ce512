#!/usr/bin/env bash
# Reliability check (outside the normal test suite; ~15 minutes on 2 loaded CPU cores): bad inputs through the CLI
# and both HTTP routes, schemathesis against /openapi.json, web UI uploads, SIGKILL-during-train -> --resume, and
# with SOAK_S=N (e.g. 1800) a mixed-traffic soak. Prints one table: inputs tried, tracebacks, 5xx, wrong
# exits/statuses, schema mismatches, partial files, rows lost/doubled, max latency, memory growth; exit 1 if any
# count is non-zero. --only cli,http,schema,webui,resume,soak runs some parts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" scripts/reliability.py "$@"
