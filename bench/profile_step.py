"""Where does a LoRA training step's time go? torch.profiler over steps of the training benchmark's setup.

    python bench/profile_step.py --arch 7b --out DIR [--variant ours] [key=value TrainConfig overrides]

Runs domainvlm's trainer on bench/train_lora_bench.py's model and data, profiles two steady-state optimizer
steps and prints: wall time per step, GPU busy time per step (sum of kernel times: the rest is the GPU
waiting on the host), the top kernels by GPU time and the top host-side ops by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_lora_bench as tlb  # noqa: E402


def main() -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from domainvlm.config import from_dict, to_dict
    from domainvlm.train.config import LoraConfig, TrainConfig
    from domainvlm.train.speed import load_attn
    from domainvlm.train.trainer import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(tlb.ARCHS), default="7b")
    p.add_argument("--variant", default="ours", choices=[k for k, v in tlb.VARIANTS.items() if v[0] == "ours"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--out", default="profile-out")
    p.add_argument("overrides", nargs="*", help="TrainConfig key=value, e.g. lora.dropout=0")
    a = p.parse_args()
    out = Path(a.out)
    data = tlb.make_data(out / "data", 8 * a.batch + 2, tlb.ARCHS[a.arch]["image_size"])
    cuda = torch.cuda.is_available()
    opts = dict(tlb.VARIANTS[a.variant][1])
    cfg = TrainConfig(data=str(data), output_dir=str(out / "run"), mode="lora",
                      lora=LoraConfig(r=tlb.LORA["r"], alpha=tlb.LORA["alpha"], dropout=tlb.LORA["dropout"],
                                      target_modules=tlb.LORA["targets"]),
                      max_steps=7, batch_size=a.batch, lr=1e-4, val_fraction=0.01, eval_every=0, eval_samples=0,
                      save_every=0, log_every=1, num_workers=a.workers, max_length=1024, **opts)
    d = to_dict(cfg)
    for ov in a.overrides:  # dotted key=value onto the benchmark's config
        k, v = ov.split("=", 1)
        node, parts = d, k.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = v
    cfg = from_dict(TrainConfig, d)
    model, proc = tlb.build_model(a.arch, "cuda" if cuda else "cpu", load_attn(cfg) or "sdpa")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    times = []
    with profile(activities=acts, schedule=schedule(wait=3, warmup=1, active=2, repeat=1)) as prof:
        def on_step(step, loss, batch):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter())
            prof.step()

        train(cfg, progress=False, model=model, processor=proc, on_step=on_step)
    dt = [b - t for t, b in zip(times, times[1:])]
    ka = prof.key_averages()
    dev_attr = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
    busy = sum(getattr(e, dev_attr) for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / 2 / 1e3
    print(f"variant {a.variant} {' '.join(a.overrides)}; step wall ms: {[round(x * 1e3) for x in dt]}")
    print(f"GPU kernel time per profiled step: {busy:.1f} ms")
    if cuda:
        print(ka.table(sort_by=dev_attr, row_limit=a.rows, max_name_column_width=70))
    print(ka.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
