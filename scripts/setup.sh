#!/usr/bin/env bash
# Create .venv and install domainvlm with everything its commands and tests need. Idempotent.
# torch is pinned first on purpose: a looser pin would pull several GB of CUDA wheels on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
stamp=.venv/.domainvlm-installed
want="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)-${1:-base}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q "torch==2.13.0"
if [ "${1:-base}" = "test" ]; then
  python -m pip install -q -e ".[pickle,radiology,serve,test,quant]"
else
  python -m pip install -q -e ".[pickle,radiology,serve]"
fi
echo "$want" > "$stamp"
