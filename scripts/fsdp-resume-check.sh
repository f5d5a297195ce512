#!/usr/bin/env bash
# FSDP resume check (2 GPUs, <= 3 minutes, no network): a tiny Qwen2-VL trained with its weights, gradients and
# optimizer state sharded by FSDP2 (configs/accelerate_fsdp.yaml) resumes from a SIGKILL to the same losses.
#   1 N steps uninterrupted; 2 the same run, its rank 0 SIGKILLed right after the checkpoint of step N/2;
#   3 --resume of run 2 to step N. PASS when steps 1..N of runs 1 and 2+3 agree (relative TOL) and Adam's step
#   count in the last checkpoint is N (the optimizer state was resumed, not restarted).
#   scripts/fsdp-resume-check.sh [OUT_DIR]      N=40 TOL=2e-3 PRECISION=bf16 (fp32 for an exact check)
#   MODE=lora: the same with a LoRA adapter on the sharded base (default full fine-tuning)
#   LAUNCH='...' PORT_FLAG=--master_port: another launcher (default: accelerate launch --config_file
#   configs/accelerate_fsdp.yaml --num_processes 2, port flag --main_process_port)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/fsdp-resume-check}
PY=${PYTHON:-python3}
N=${N:-40}
TOL=${TOL:-2e-3}
PORT=${PORT:-29571}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS: the two runs do the same sums
LAUNCH=${LAUNCH:-"$PY -m accelerate.commands.launch --config_file configs/accelerate_fsdp.yaml --num_processes 2"}
rm -rf "$OUT" && mkdir -p "$OUT"
LOG="$OUT/fsdp-resume-check.log"
fail() { echo "FAIL $*"; tail -n 30 "$LOG"; exit 1; }

echo "=== data + tiny model" | tee -a "$LOG"
"$PY" -c "from domainvlm.models.tiny import build_tiny; build_tiny('qwen2_vl', '$OUT/tiny', hidden=64, layers=2)" \
  >>"$LOG" 2>&1 || fail "building the tiny model"
"$PY" -m domainvlm data synth --out "$OUT/synth.npz" --n 96 --size 52 >>"$LOG" 2>&1 || fail "data synth"
"$PY" -m domainvlm data build --source "$OUT/synth.npz" --out "$OUT/synth" --langs en >>"$LOG" 2>&1 || fail "data build"

run() {  # run NAME KILL_AT [extra...]: one 2-process FSDP training of N steps into $OUT/NAME
  local name=$1 kill_at=$2; shift 2
  PORT=$((PORT + 1))
  echo "=== $name (kill at ${kill_at/#0/never}) $*" | tee -a "$LOG"
  $LAUNCH "${PORT_FLAG:---main_process_port}" "$PORT" scripts/fsdp_kill_at.py "$kill_at" train model="$OUT/tiny" \
    data="$OUT/synth/train.jsonl" output_dir="$OUT/$name" mode="${MODE:-full}" precision="${PRECISION:-bf16}" \
    attn_implementation=eager max_steps="$N" save_every=$((N / 2)) batch_size=4 lr=2e-3 log_every=1 \
    eval_every=0 eval_samples=0 report_to=none --no-progress "$@" >>"$LOG" 2>&1
}
t0=$SECONDS
run whole 0 || fail "uninterrupted run"
run killed $((N / 2)) && fail "run 2 was not killed"
grep -q "checkpoint $((N / 2)) written, SIGKILL" "$LOG" || fail "run 2 died before its checkpoint"
[ ! -e "$OUT/killed/model" ] || fail "run 2 got to its end"
run killed 0 --resume || fail "resumed run"

"$PY" - "$OUT" "$N" "$TOL" $((SECONDS - t0)) <<'PYEOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
import torch
out, n, tol, secs = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def losses(name):
    h = json.loads((out / name / "checkpoint" / "trainer_state.json").read_text())["history"]
    return {r["step"]: r["loss"] for r in h if "loss" in r}
a, b = losses("whole"), losses("killed")
rel = {s: abs(a[s] - b[s]) / max(abs(a[s]), 1e-8) for s in a if s in b}
st = torch.load(out / "killed" / "checkpoint" / "optim.pt", weights_only=True)["optimizer"]["state"]
adam = {int(v["step"]) for v in st.values()}
by_name = bool(st) and all(isinstance(k, str) for k in st)  # gathered from FSDP shards (by index otherwise)
worst = max(rel.values(), default=float("inf"))
for s in (1, n // 2, n // 2 + 1, n):
    print(f"# step {s}: uninterrupted {a.get(s)}  resumed {b.get(s)}")
before = max((v for s, v in rel.items() if s <= n // 2), default=0.0)
print(f"# largest relative loss gap: steps 1-{n // 2} {before:.2e}, steps {n // 2 + 1}-{n} "
      f"{max((v for s, v in rel.items() if s > n // 2), default=float('inf')):.2e} (tol {tol}); "
      f"Adam step count {sorted(adam)}; optimizer state gathered from FSDP shards: {by_name}; {secs} s")
ok = sorted(a) == sorted(b) == list(range(1, n + 1)) and worst <= tol and adam == {n} and by_name
print("PASS fsdp-resume" if ok else "FAIL fsdp-resume")
raise SystemExit(0 if ok else 1)
PYEOF
