"""One GPU vs DDP vs FSDP at equal global batch: the unchanged `domainvlm train` under `accelerate launch`.

    python bench/train_multigpu.py --out DIR            # on a 2-GPU machine
    python bench/train_multigpu.py --out DIR --cpu      # local smoke test: 2 CPU processes (torchrun, gloo)

Runs LoRA on one GPU (batch 8) and with DDP on 2 GPUs (batch 4 each), and full fine-tuning on one GPU and with
FSDP on 2 GPUs; all read the same data in the same order (accelerate hands consecutive per-device batches to
consecutive ranks, so a global step sees the same 8 samples). Logged losses are means over ranks. Writes
curves.json, curves.png and a table comparing each multi-GPU curve with its one-GPU reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
ARCH = dict(hidden=768, layers=8, heads=12, kv_heads=4, intermediate=2048, vision_dim=256, vision_depth=4,
            vision_heads=4, patch_size=14, image_size=112, tokenizer_vocab=600)
COMMON = ["lora.dropout=0.0", "eval_every=0", "eval_samples=0", "save_every=0", "log_every=1",
          "packing=true", "answer_logits=true", "val_fraction=0.02", "seed=0"]


def runs(args) -> dict:
    """name -> (launcher command, extra env, train overrides); per-device batch x ranks = 8 everywhere."""
    steps = f"max_steps={args.steps}"
    lora = ["mode=lora", "lr=1e-3", "lora.r=16", steps]
    full = ["mode=full", "lr=5e-5", steps]
    split = f"batch_size={8 // args.gpus}"
    if args.cpu:  # torchrun + gloo on CPU (accelerate launch --cpu starts one process only)
        env = {"ACCELERATE_USE_CPU": "true"}
        fsdp_env = env | {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
                          "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
        tr = ["torchrun", "--nproc_per_node"]
        return {"lora-1": (tr + ["1"], env, lora + ["batch_size=8"]),
                "lora-ddp": (tr + [str(args.gpus)], env, lora + [split]),
                "full-1": (tr + ["1"], env, full + ["batch_size=8"]),
                "full-fsdp": (tr + [str(args.gpus)], fsdp_env, full + [split])}
    acc = ["accelerate", "launch", "--num_machines", "1", "--mixed_precision", "bf16"]
    one = acc + ["--num_processes", "1", "--gpu_ids", "0"]
    ddp = acc + ["--num_processes", str(args.gpus), "--config_file", str(ROOT / "configs/accelerate_ddp.yaml")]
    fsdp = acc + ["--num_processes", str(args.gpus), "--config_file", str(ROOT / "configs/accelerate_fsdp.yaml")]
    return {"lora-1": (one, {}, lora + ["batch_size=8"]), "lora-ddp": (ddp, {}, lora + [split]),
            "full-1": (one, {}, full + ["batch_size=8"]), "full-fsdp": (fsdp, {}, full + [split])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work", default=None)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or out / "work")
    from domainvlm.models.tiny import build_tiny
    from train_lora_bench import WORDS, make_data

    base = work / "base"
    if not (base / "config.json").exists():
        build_tiny("qwen2_vl", base, corpus=[" ".join(WORDS)] * 20, **ARCH)
    data = make_data(work / "data", 8 * args.steps + 4, ARCH["image_size"])
    plan = runs(args)
    curves, rows = {}, {}
    for name, (launcher, env, overrides) in plan.items():
        cmd = launcher + ["-m", "domainvlm", "train", f"data={data}", f"model={base}",
                          f"output_dir={work / name}", "--no-progress"] + COMMON + overrides
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | env | {"PYTHONPATH": _pypath()})
        wall = time.time() - t
        with open(out / "runs.log", "a") as fh:  # one file: the device tool returns at most 8
            fh.write(f"===== {name}: {' '.join(cmd)}\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}\n")
        state = work / name / "checkpoint" / "trainer_state.json"
        if proc.returncode or not state.exists():
            rows[name] = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:][0][-200:] if
                          (proc.stderr or proc.stdout).strip() else f"rc={proc.returncode}", "wall_s": round(wall)}
            print(name, rows[name], flush=True)
            continue
        hist = json.loads(state.read_text())["history"]
        curves[name] = [h["loss"] for h in hist if "loss" in h]
        rows[name] = {"final_loss": curves[name][-1], "wall_s": round(wall), "steps": len(curves[name])}
        print(name, rows[name], flush=True)
    for name, r in rows.items():
        ref = curves.get(name.split("-")[0] + "-1")
        if name in curves and ref and not name.endswith("-1"):
            d = [abs(a - b) for a, b in zip(curves[name], ref)]
            r["max_abs_diff_vs_1gpu"] = max(d)
            r["max_rel_diff_vs_1gpu"] = max(x / abs(b) for x, b in zip(d, ref))
    (out / "curves.json").write_text(json.dumps({"curves": curves, "rows": rows}, indent=1))
    _plot(curves, out / "curves.png")
    print("| run | steps | final loss | max abs diff vs 1 GPU | max rel diff | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        if "error" in r:
            print(f"| {name} | error: {r['error'][:80]} | | | | {r['wall_s']} |")
            continue
        d = r.get("max_abs_diff_vs_1gpu")
        rel = r.get("max_rel_diff_vs_1gpu")
        print(f"| {name} | {r['steps']} | {r['final_loss']:.4f} | {'-' if d is None else f'{d:.4f}'} | "
              f"{'-' if rel is None else f'{100 * rel:.2f}%'} | {r['wall_s']} |")
    return 0


def _pypath() -> str:
    return os.pathsep.join([p for p in [os.environ.get("PYTHONPATH"), str(ROOT / "src")] if p])


def _plot(curves: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name, linestyle="--" if not name.endswith("-1") else "-")
    ax.set_xlabel("optimizer step (global batch 8)")
    ax.set_ylabel("train loss (mean over ranks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(dest, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
