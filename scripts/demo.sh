#!/usr/bin/env bash
# Main job on the bundled default model: install everything, then diagnose a bundled example wafer map,
# asked in English and in Chinese. Extra arguments go to `domainvlm ask` (e.g. --image other.png).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ex=$(ls src/domainvlm/assets/examples/*.png | head -1)
echo "== $ex"
domainvlm ask --image "$ex" "What defect pattern does this wafer map show?" "$@"
echo
domainvlm ask --image "$ex" "这张晶圆图显示了什么缺陷模式？" "$@"
