#!/usr/bin/env bash
# Does a folder we ship load with stock transformers classes and answer as `domainvlm ask` does?
# Builds a throwaway venv OUTSIDE the project env (default /tmp/stockvenv; the project env never gets
# torchvision) with torch (CPU) + the matching torchvision + transformers, then compares greedy answers.
#   scripts/stock-load-check.sh [MODEL_DIR]     (default: the bundled wafer expert)
# Env: STOCK_VENV (venv path), TORCH_INDEX (extra index for the CPU wheels; default PyTorch's CPU index,
# empty = only pip's configured indexes), MAX_NEW_TOKENS (default 256, as ask).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROJECT_PY=${PROJECT_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL=${1:-$ROOT/src/domainvlm/assets/wafer-expert}
VENV=${STOCK_VENV:-/tmp/stockvenv}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
MAX_NEW=${MAX_NEW_TOKENS:-256}
case "$(realpath -m "$VENV")" in "$ROOT"/*) echo "STOCK_VENV must be outside the project: $VENV" >&2; exit 2;; esac

if [ ! -x "$VENV/bin/python" ]; then ${PYTHON:-python3} -m venv "$VENV"; fi
idx=(); [ -n "$TORCH_INDEX" ] && idx=(--extra-index-url "$TORCH_INDEX")
"$VENV/bin/python" -m pip install -q "${idx[@]}" "torch==2.13.0" "torchvision==0.28.0"
"$VENV/bin/python" -m pip install -q "transformers>=5.17,<6" pillow safetensors
if "$VENV/bin/python" -c "import domainvlm" 2>/dev/null; then echo "the stock venv can import domainvlm" >&2; exit 2; fi
if ! "$VENV/bin/python" -c "import torchvision.ops" 2>/dev/null; then
  # PyPI's Linux torchvision wheel is the CUDA build: its _C.so needs libtorch_cuda, absent from CPU torch
  echo "torchvision $("$VENV/bin/pip" show torchvision 2>/dev/null | sed -n 's/^Version: //p') does not import" \
       "with torch $("$VENV/bin/pip" show torch 2>/dev/null | sed -n 's/^Version: //p'): install the +cpu wheels" \
       "(TORCH_INDEX=https://download.pytorch.org/whl/cpu, or a mirror of it; rm -r $VENV first)" >&2
  exit 3
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ex=$ROOT/src/domainvlm/assets/examples
cases=("$ex/wafer_scratch.png|What defect pattern does this wafer map show?"
       "$ex/wafer_center.png|这张晶圆图显示了什么缺陷模式？"
       "$ex/wafer_edge_ring.png|Describe this wafer map.")
printf '[' > "$work/ask.json"; sep=""
for c in "${cases[@]}"; do
  img=${c%%|*}; q=${c#*|}
  ans=$(PYTHONPATH="$ROOT/src" "$PROJECT_PY" -m domainvlm ask --model "$MODEL" --image "$img" \
        --max-new-tokens "$MAX_NEW" --device cpu "$q")
  "$PROJECT_PY" -c 'import json,sys; print(json.dumps({"image": sys.argv[1], "question": sys.argv[2],
                    "ask": sys.argv[3].strip()}, ensure_ascii=False), end="")' "$img" "$q" "$ans" \
    | { printf '%s' "$sep"; cat; } >> "$work/ask.json"
  sep=","
done
printf ']' >> "$work/ask.json"
"$VENV/bin/python" scripts/stock_load_check.py "$MODEL" "$work/ask.json" "$MAX_NEW"
