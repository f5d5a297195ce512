"""LoRA SFT throughput: domainvlm's trainer vs a plain ``transformers.Trainer`` + peft script, same data.

    python bench/train_lora_bench.py --arch 7b --out DIR            # on a GPU (Qwen2-VL-7B architecture)
    python bench/train_lora_bench.py --arch tiny --out DIR --steps 2  # CPU smoke test of every variant

The model has the Qwen2-VL-7B architecture with random bf16 weights built on the GPU (speed does not depend
on the weights). Data: synthetic X-ray-like images (448x448 -> 256 image tokens) with reports of varying
length, encoded by the same processor and chat template for every variant. Each variant runs in its own
process (clean peak-memory numbers; an OOM does not end the benchmark). Throughput counts real (non-pad)
tokens; MFU = model FLOPs / (time x peak), where model FLOPs are what the step needs whatever the
implementation: frozen base weights cost 2N forward + 2N backward (input grads only) per token, LoRA 6N_lora,
the LM head only on answer tokens, the frozen vision tower a forward pass, plus attention.
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
PEAK_TFLOPS = 989.4  # dense bf16, H100 SXM and H200 (spec)
ARCHS = {
    "7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab_size=152064, tie=False,
               vision_dim=1280, vision_depth=32, vision_heads=16, patch_size=14, image_size=448,
               initializer_range=0.02, vision_initializer_range=0.02),
    "tiny": dict(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256, vocab_size=2048, tie=False,
                 vision_dim=64, vision_depth=2, vision_heads=2, patch_size=14, image_size=112),
}
# name -> (runner, options). hf = the plain script; ours = domainvlm.train.trainer.train.
VARIANTS = {
    "hf_gc": ("hf", dict(gc=True)),
    "hf": ("hf", dict(gc=False)),
    "ours_gc": ("ours", dict(gradient_checkpointing=1.0, packing=True, answer_logits=True)),
    "ours_gc75": ("ours", dict(gradient_checkpointing=0.75, packing=True, answer_logits=True)),
    "ours_gc50": ("ours", dict(gradient_checkpointing=0.5, packing=True, answer_logits=True)),
    "ours": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True)),
    "ours_compile": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True, compile=True)),
    "ours_compile_gc50": ("ours", dict(gradient_checkpointing=0.5, packing=True, answer_logits=True, compile=True)),
    "ours_compile_gc": ("ours", dict(gradient_checkpointing=1.0, packing=True, answer_logits=True, compile=True)),
    "ours_sdpa_pad_gc": ("ours", dict(gradient_checkpointing=1.0, lora_fp32_inputs=True)),
    "ours_fp32in": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True, lora_fp32_inputs=True)),
    "ours_varlen": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True,
                                 attn_implementation="varlen")),
    "ours_varlen_liger": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True,
                                       attn_implementation="varlen", liger_kernels=True)),
    "ours_varlen_compile": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True,
                                         attn_implementation="varlen", compile=True)),
    "ours_varlen_unfused": ("ours", dict(gradient_checkpointing=0.0, packing=True, answer_logits=True,
                                         attn_implementation="varlen", fused_lora=False)),
    "ours_varlen_gc50": ("ours", dict(gradient_checkpointing=0.5, packing=True, answer_logits=True,
                                      attn_implementation="varlen")),
    "ours_varlen_gc": ("ours", dict(gradient_checkpointing=1.0, packing=True, answer_logits=True,
                                    attn_implementation="varlen")),
    "ours_qlora_varlen_gc": ("ours", dict(gradient_checkpointing=1.0, packing=True, answer_logits=True,
                                          attn_implementation="varlen", quantization="4bit")),
    "ours_qlora_gc": ("ours", dict(gradient_checkpointing=1.0, packing=True, answer_logits=True,
                                   quantization="4bit")),
    "hf_qlora_gc": ("hf", dict(gc=True, quantization="4bit")),
    # LLaMA-Factory (bench/train_lora_lf.py): its default gradient checkpointing, none, and none + packing
    "lf_gc": ("lf", dict(gc=True, liger=True)),
    "lf": ("lf", dict(gc=False, liger=True)),
    "lf_packing": ("lf", dict(gc=False, liger=True, packing=True)),
    "lf_noliger": ("lf", dict(gc=False, liger=False)),
    # ms-swift (bench/train_lora_swift.py): the same three; its packing needs flash-attn (it refuses sdpa)
    "swift_gc": ("swift", dict(gc=True, liger=True)),
    "swift": ("swift", dict(gc=False, liger=True)),
    "swift_noliger": ("swift", dict(gc=False, liger=False)),
    "swift_packing": ("swift", dict(gc=False, liger=True, packing=True)),
}
WORDS = ("the heart size is normal lungs are clear there no focal consolidation pleural effusion or pneumothorax "
         "mild cardiomegaly with small left basal atelectasis degenerative changes of spine visualized osseous "
         "structures unremarkable interval improvement bilateral opacities suggest edema right upper lobe").split()
LORA = dict(r=16, alpha=32, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"])


def make_data(root: Path, n: int, image_size: int, seed: int = 0, system: str = "") -> Path:
    """n records: one grayscale 'radiograph' each (smooth blobs + noise) and a report of 20-180 words;
    ``system``: a system turn first (LLaMA-Factory's template adds its default one to every record, so with the
    same text here both runners train on the same token sequences)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    rows = []
    for i in range(n):
        img = sum(np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / 0.05) for _ in range(3))
        img = np.clip(img / img.max() * 200 + rng.normal(0, 12, img.shape), 0, 255).astype("uint8")
        Image.fromarray(img).convert("RGB").save(root / f"cxr{i}.png")
        report = " ".join(rng.choice(WORDS, int(rng.integers(20, 181)))) + "."
        turns = [{"role": "system", "content": system}] if system else []
        turns += [{"role": "user", "content": "<image>\nDescribe the findings of this chest X-ray."},
                  {"role": "assistant", "content": report}]
        rows.append({"id": str(i), "images": [f"cxr{i}.png"], "labels": {"task": "report"}, "messages": turns})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data.jsonl"


def build_model(arch: str, device: str, attn: str = "sdpa"):
    """(model, processor) of the given architecture with random weights, built directly on ``device``."""
    import torch

    from domainvlm.models.tiny import config_and_processor, model_class

    a = dict(ARCHS[arch])
    config, proc = config_and_processor("qwen2_vl", corpus=[" ".join(WORDS)] * 20, tokenizer_vocab=600, **a)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class("qwen2_vl")._from_config(config, dtype=dtype, attn_implementation=attn)
    return model, proc


class Meter:
    """Counts real tokens / samples entering the model's forward and times optimizer steps."""

    def __init__(self, model, cuda: bool, nonzero: bool = False):
        self.cuda, self.tok, self.smp, self.steps, self.nonzero = cuda, 0, 0, [], nonzero
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kw):
        if not module.training:
            return
        am = kw.get("attention_mask")
        if am is not None:  # packed batches may mark sequences 1, 2, ... (LLaMA-Factory): count non-zero
            self.tok += int((am != 0).sum()) if self.nonzero else int(am.sum())
        else:
            self.tok += kw["input_ids"].numel()
        self.smp += int(kw["image_grid_thw"].shape[0])  # one image per sample

    def step(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            if not self.steps:  # steady state: the peak of steps 2.. (weights, optimizer state included)
                torch.cuda.reset_peak_memory_stats()
                self.static = torch.cuda.memory_allocated() / 2**30  # what stays between steps
        self.steps.append((time.perf_counter(), self.tok, self.smp))

    def result(self, warmup: int) -> dict:
        import torch

        (t0, k0, s0), (t1, k1, s1) = self.steps[warmup - 1], self.steps[-1]
        dt = t1 - t0
        return {"steps_timed": len(self.steps) - warmup, "seconds": dt, "tokens_per_s": (k1 - k0) / dt,
                "samples_per_s": (s1 - s0) / dt, "tokens_per_sample": (k1 - k0) / max(s1 - s0, 1),
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None,
                "static_mem_gib": getattr(self, "static", None),
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if self.cuda else None}


def quantized_dir(arch: str, work: Path) -> Path:
    """QLoRA and LLaMA-Factory load a model folder, so the random model is saved once as a local folder."""
    d = work / f"base-{arch}"
    if not (d / "config.json").exists():
        model, proc = build_model(arch, "cuda" if _cuda() else "cpu")
        model.save_pretrained(d)
        proc.save_pretrained(d)
    return d


def load_base(args, opts):
    """Random-weight base on the device; QLoRA goes through the real loader (bitsandbytes while loading)."""
    cuda = _cuda()
    if not opts.get("quantization"):
        return build_model(args.arch, "cuda" if cuda else "cpu")
    from domainvlm.models.loader import load_model

    return load_model(quantized_dir(args.arch, Path(args.work)), device="cuda" if cuda else "cpu",
                      dtype="bfloat16" if cuda else "float32", quantization=opts["quantization"])


def run_hf(args, opts, data: Path) -> dict:
    """The plain script: Trainer + peft, right padding, every logit, HF's gradient checkpointing switch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from domainvlm.models.chat_format import IGNORE
    from domainvlm.train.dataset import RecordDataset, load_records

    cuda = _cuda()
    model, proc = load_base(args, opts)
    meter = Meter(model, cuda)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["targets"], task_type="CAUSAL_LM"))
    pad = proc.tokenizer.pad_token_id

    def collate(items):
        n = max(x["input_ids"].shape[1] for x in items)
        out = {}
        for k, fill in (("input_ids", pad), ("attention_mask", 0), ("labels", IGNORE), ("mm_token_type_ids", 0)):
            out[k] = torch.stack([torch.nn.functional.pad(x[k][0], (0, n - x[k].shape[1]), value=fill) for x in items])
        out["pixel_values"] = torch.cat([x["pixel_values"] for x in items])
        out["image_grid_thw"] = torch.cat([x["image_grid_thw"] for x in items])
        return out

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            meter.step()

    ds = RecordDataset(load_records(data), proc, 1024, data.parent)
    ta = TrainingArguments(output_dir=str(Path(args.work) / "hf-run"), per_device_train_batch_size=args.batch,
                           max_steps=args.warmup + args.steps, learning_rate=1e-4, bf16=cuda, use_cpu=not cuda,
                           gradient_checkpointing=opts["gc"], gradient_checkpointing_kwargs={"use_reentrant": False},
                           logging_steps=1, save_strategy="no", report_to=[], remove_unused_columns=False,
                           dataloader_num_workers=args.workers, label_names=["labels"], seed=0)
    Trainer(model=model, args=ta, train_dataset=ds, data_collator=collate, callbacks=[Timer()]).train()
    return meter.result(args.warmup)


def run_ours(args, opts, data: Path) -> dict:
    from domainvlm.train.config import LoraConfig, TrainConfig
    from domainvlm.train.trainer import train

    cuda = _cuda()
    cfg = TrainConfig(data=str(data), output_dir=str(Path(args.work) / "ours-run"), mode="lora",
                      lora=LoraConfig(r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"],
                                      target_modules=LORA["targets"]),
                      max_steps=args.warmup + args.steps, batch_size=args.batch, lr=1e-4, val_fraction=0.01,
                      eval_every=0, eval_samples=0, save_every=0, log_every=1, num_workers=args.workers,
                      max_length=1024, **opts)
    model, proc = load_base(args, opts)
    meter = Meter(model, cuda)
    losses = []

    def on_step(step, loss, batch):
        meter.step()
        losses.append(round(loss.item(), 5))  # the step's loss: variants must agree (same data, seed)

    train(cfg, progress=False, model=model, processor=proc, on_step=on_step)
    from domainvlm.models.varlen_attention import _kernel

    return meter.result(args.warmup) | {"losses": losses[:3], "varlen_kernel": _kernel()[0] is not None}


def model_flops_per_sample(arch: str, s_mean: float, s2_mean: float, lab_mean: float) -> float:
    a = ARCHS[arch]
    h, L, kv, inter = a["hidden"], a["layers"], a["kv_heads"], a["intermediate"]
    hd = h // a["heads"]
    body = L * (2 * h * h + 2 * h * kv * hd + 3 * h * inter)
    lora = L * LORA["r"] * ((h + h) * 2 + (h + kv * hd) * 2 + (h + inter) * 3)
    d, depth, side = a["vision_dim"], a["vision_depth"], a["image_size"] // a["patch_size"]
    patches = side * side
    vis = depth * 12 * d * d + (4 * d) ** 2 + 4 * d * h  # blocks (mlp_ratio 4) + merger
    f = 4 * body * s_mean + 6 * lora * s_mean + 6 * L * h * s2_mean  # frozen: fwd + input-grad bwd; attention
    f += 4 * h * a["vocab_size"] * lab_mean  # LM head on answer tokens, fwd + bwd
    f += 2 * vis * patches + 4 * depth * patches * patches * d  # frozen vision tower: forward only
    return f


def data_stats(data: Path, arch: str) -> dict:
    from domainvlm.train.dataset import RecordDataset, load_records

    from domainvlm.models.tiny import config_and_processor

    _, proc = config_and_processor("qwen2_vl", corpus=[" ".join(WORDS)] * 20, tokenizer_vocab=600,
                                   **dict(ARCHS[arch]))
    ds = RecordDataset(load_records(data), proc, 1024, data.parent)
    lens, labs = [], []
    for i in range(len(ds)):
        e = ds[i]
        lens.append(e["input_ids"].shape[1])
        labs.append(int((e["labels"] != -100).sum()))
    n = len(lens)
    return {"s_mean": sum(lens) / n, "s2_mean": sum(x * x for x in lens) / n, "lab_mean": sum(labs) / n,
            "s_min": min(lens), "s_max": max(lens)}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="7b")
    p.add_argument("--variants", default="hf_gc,hf,ours_varlen,ours_varlen_unfused,ours_varlen_gc,ours_qlora_varlen_gc")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--work", default=None, help="scratch folder (data, saved base for QLoRA)")
    p.add_argument("--system", default="", help="a system turn in every record, e.g. LLaMA-Factory's default "
                   "'You are a helpful assistant.' (its qwen2_vl template adds that one when a record has none)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or str(out / "work")
    data = Path(args.work) / "data" / "data.jsonl"
    n = (args.warmup + args.steps) * args.batch + 2
    if args.one:
        runner, opts = VARIANTS[args.one]
        if runner == "lf":
            from train_lora_lf import run_lf

            res = run_lf(args, dict(opts), data, quantized_dir, Meter, LORA)
        elif runner == "swift":
            from train_lora_swift import run_swift

            res = run_swift(args, dict(opts), data, quantized_dir, Meter, LORA)
        else:
            res = (run_hf if runner == "hf" else run_ours)(args, dict(opts), data)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    make_data(data.parent, n, ARCHS[args.arch]["image_size"], system=args.system)
    stats = data_stats(data, args.arch)
    fps = model_flops_per_sample(args.arch, stats["s_mean"], stats["s2_mean"], stats["lab_mean"])
    print(f"data: {n} records, {stats['s_min']}-{stats['s_max']} tokens (mean {stats['s_mean']:.0f}), "
          f"{stats['lab_mean']:.0f} answer tokens/sample; model FLOPs/sample {fps / 1e12:.2f} T", flush=True)
    rows = {}
    for v in args.variants.split(","):
        t = time.time()
        cmd = [sys.executable, __file__, "--one", v] + [f"--{k}={getattr(args, k)}" for k in
                                                        ("arch", "batch", "steps", "warmup", "workers", "out", "work")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            oom = "OutOfMemory" in proc.stderr or "out of memory" in proc.stderr
            rows[v] = {"error": "OOM" if oom else " | ".join(tail)[-300:]}
        else:
            rows[v] = json.loads(lines[-1][7:])
            rows[v]["mfu"] = rows[v]["samples_per_s"] * fps / (PEAK_TFLOPS * 1e12) if _cuda() else None
        rows[v]["wall_s"] = round(time.time() - t, 1)
        with open(out / "variants.log", "a") as fh:  # one file: the device tool returns at most 8
            fh.write(f"===== {v}\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}\n")
        print(v, json.dumps(rows[v]), flush=True)
    (out / "bench.json").write_text(json.dumps({"args": vars(args), "data": stats, "flops_per_sample": fps,
                                                "device": _device(), "rows": rows}, indent=1))
    print(table(rows, _device()))
    return 0


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def table(rows: dict, device: str) -> str:
    ref = rows.get("hf_gc", {}).get("tokens_per_s")
    lines = [f"device: {device}", "| variant | tokens/s | samples/s | MFU | peak mem GiB | vs hf_gc |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v, r in rows.items():
        if "error" in r:
            lines.append(f"| {v} | {r['error'][:60]} | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        mem = f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") is not None else "-"
        sp = f"{r['tokens_per_s'] / ref:.2f}x" if ref else "-"
        lines.append(f"| {v} | {r['tokens_per_s']:.0f} | {r['samples_per_s']:.2f} | {mfu} | {mem} | {sp} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
