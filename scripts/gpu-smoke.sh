#!/usr/bin/env bash
# GPU smoke test (<= 3 minutes on one H200): every code path that runs on a GPU, on the code as it is now.
# CI is CPU-only and cannot see these paths; run this on a GPU machine after every change to code that runs
# there (trainers, fast paths, kernels, answer heads, eval/bench on cuda) and record its last run in
# docs/benchmarks.md ("GPU smoke").
#
#   scripts/gpu-smoke.sh [OUT_DIR]          DATA=../shared/data (MixedWM38 + WM-811K npz) by default
#   EVAL_LIMIT=4096 scripts/gpu-smoke.sh    evaluate the first N val maps of each set (default: all)
#   BATCH=1024 scripts/gpu-smoke.sh         batch size of the eval and bench steps (default 2048, bench's own)
#
# Steps: 1 a few train-expert steps (fast vision path check under TF32, bf16 autocast, EMA, val selection,
# save), then the CNN teacher and its distillation for a few steps; 2 a bf16 LoRA step of the generic trainer on a tiny Qwen2-VL; 3 eval of the bundled expert on cuda
# over both full val sets; 4 bench on cuda, and answer + evidence at batch 8; 5 log-probs and json_schema answers
# (scripts/gpu_smoke_engine.py); then the eval/bench speed ratio. Exit 0 only if all pass.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-smoke}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/gpu-smoke.log"
: > "$LOG"
fail=0
MIX="$DATA/mixedwm38/mixedwm38_trainval.npz"
WM="$DATA/wm811k/wm811k_trainval.npz"
LIMIT=()
if [ "${EVAL_LIMIT:-0}" != 0 ]; then LIMIT=(--limit "$EVAL_LIMIT"); fi

step() {  # step NAME CMD...: run, time, log; record PASS/FAIL
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$LOG"
  if "$@" >>"$LOG" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s)" | tee -a "$LOG"
  else
    echo "FAIL $name ($((SECONDS - t0)) s, exit $?): last lines:" | tee -a "$LOG"
    tail -n 25 "$LOG"
    fail=1
  fi
}

"$PY" - <<'EOF' | tee -a "$LOG"
import torch, transformers, peft
ok = torch.cuda.is_available()
print(f"# torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"cuda {'yes: ' + torch.cuda.get_device_name(0) if ok else 'NO'}")
raise SystemExit(0 if ok else 1)
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL no CUDA device"; exit 1; }
for f in "$MIX" "$WM"; do [ -f "$f" ] || { echo "FAIL missing $f (set DATA=)"; exit 1; }; done

step train-expert "$PY" -m domainvlm train-expert --config configs/wafer-expert.yaml "phases=[]" \
  mixedwm38="$MIX" wm811k="$WM" output_dir="$OUT/expert" max_steps=30 batch_size=256 warmup_steps=5 \
  limit_maps=3000 "eval_at=[1.0]" eval_limit=512 log_every=10

# the recipe's TensorBoard scalars and curves PNG (train/recipe_log.py)
step recipe-logs bash -c "test -s '$OUT/expert/training_curves.png' && ls '$OUT/expert/tb/'*tfevents*"

# the CNN teacher (channels_last, bf16 autocast, cudnn) and its token-level distillation, continuing step 1's
# model; the replay maps' shift and die noise (map_jitter.py, off in the shipped recipe) run here too
step train-expert-kd "$PY" -m domainvlm train-expert --config configs/wafer-expert.yaml "phases=[]" \
  mixedwm38="$MIX" wm811k="$WM" output_dir="$OUT/expert-kd" init_model="$OUT/expert/model" max_steps=10 \
  batch_size=256 warmup_steps=2 limit_maps=3000 "eval_at=[1.0]" eval_limit=512 log_every=5 shift_px=3 die_noise=0.02 \
  teacher_steps=30 teacher_batch=256 teacher_width=32 teacher_downsample=4 kd_loss=1 kd_temperature=2

step lora-bf16 bash -c "
  set -e
  '$PY' -c \"from domainvlm.models.tiny import build_tiny; build_tiny('qwen2_vl', '$OUT/tiny', hidden=64, layers=2)\"
  '$PY' -m domainvlm data synth --out '$OUT/synth.npz' --n 96 --size 52
  '$PY' -m domainvlm data build --source '$OUT/synth.npz' --out '$OUT/synth' --langs en
  '$PY' -m domainvlm train model='$OUT/tiny' data='$OUT/synth/train.jsonl' mode=lora precision=bf16 \
    output_dir='$OUT/lora' max_steps=4 batch_size=4 eval_every=0 save_every=0 log_every=1 eval_samples=8
  test -f '$OUT/lora/model/adapter_config.json'
  '$PY' -c \"import json, math; s = json.load(open('$OUT/lora/train_summary.json')); v = s['last']['val_loss']; print('# lora val_loss', v); assert math.isfinite(v)\"
"

step train-classify bash -c "
  set -e
  '$PY' - '$OUT/folder' <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, n in (('train', 12), ('val', 6)):
    for label, axis in (('horizontal', 0), ('vertical', 1)):
        d = Path(sys.argv[1]) / split / label
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):  # stripes along one axis plus noise: two classes a model can tell apart
            a = np.sin(np.arange(64) / (2 + i % 3))[:, None] * np.ones((1, 64))
            a = (a if axis == 0 else a.T) * 80 + 128 + rng.normal(0, 20, (64, 64))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f'{i}.png')
PYEOF
  '$PY' -m domainvlm train-classify data='$OUT/folder' output_dir='$OUT/classify' max_steps=20 batch_size=16 \
    warmup_steps=2 teacher_steps=10 teacher_batch=16 compact.image_size=64 compact.patch_size=8 \
    compact.vision_depth=2 compact.layers=1 'eval_at=[1.0]' log_every=5
  '$PY' -m domainvlm eval --device cuda --model '$OUT/classify/model' --data '$OUT/folder' --split val \
    --out '$OUT/eval_classify.json' --quiet
"

# eval and bench at one batch size (bench's GPU default), same model, dtype (bf16) and MixedWM38 val maps, so
# the ratio printed below is like for like; eval's rate also holds reading records, drawing maps, scoring
# and its first batch's warm-up, which is the point of comparing them.
BS=${BATCH:-2048}
step eval-mixedwm38 "$PY" -m domainvlm eval --device cuda --data "$MIX" --split val "${LIMIT[@]}" \
  --batch-size "$BS" --out "$OUT/eval_mixedwm38.json" --quiet
step eval-wm811k "$PY" -m domainvlm eval --device cuda --data "$WM" --split val "${LIMIT[@]}" \
  --batch-size "$BS" --out "$OUT/eval_wm811k.json" --quiet
step bench "$PY" -m domainvlm bench --device cuda --source "$MIX" --runs 100 --batch-size "$BS" \
  --out "$OUT/bench.json"
# answer + evidence on cuda (the evidence's lean LM step, kept vision tokens at batch <= 16)
step bench-evidence "$PY" -m domainvlm bench --device cuda --evidence --runs 10 --batch-size 8 --maps 8 \
  --out "$OUT/bench_evidence.json"
# answer paths eval and bench do not take: log-probs of a head's answer (scored teacher-forced), json_schema
step engine-answers "$PY" scripts/gpu_smoke_engine.py "$MIX"

"$PY" - "$OUT" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    b = json.loads((out / "bench.json").read_text())
    brow = max((r for r in b["rows"] if "maps_per_s" in r), key=lambda r: r["maps_per_s"])
    bench = brow["maps_per_s"]
    lat = next((r["p50_ms"] for r in b["rows"] if "p50_ms" in r), None)
except (OSError, ValueError, StopIteration):
    raise SystemExit("# no bench result")
print(f"# bench on cuda: {bench} maps/s at batch {brow['batch_size']}, {b['dtype']}, p50 {lat} ms at batch 1 "
      f"({b['machine']})")
for name in ("mixedwm38", "wm811k"):
    p = out / f"eval_{name}.json"
    if not p.exists():
        continue
    m = json.loads(p.read_text())
    score = f"exact match {m['exact_match']:.4f}" if name == "mixedwm38" else f"macro-F1 {m['macro_f1']:.4f}"
    same = (m.get("batch_size"), m.get("dtype")) == (brow["batch_size"], b["dtype"])
    print(f"# eval {name} val on cuda: n {m['n']}, {score}, unparsed {m['unparsed']}, "
          f"{m['records_per_s']} maps/s at batch {m.get('batch_size')}, {m.get('dtype')} = "
          f"{m['records_per_s'] / bench:.0%} of bench" + ("" if same else " (NOT like for like: batch/dtype differ)"))
EOF
if [ $fail = 0 ]; then echo "GPU SMOKE: PASS" | tee -a "$LOG"; else echo "GPU SMOKE: FAIL" | tee -a "$LOG"; fi
exit $fail
