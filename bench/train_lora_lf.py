"""The LLaMA-Factory runner of ``bench/train_lora_bench.py``: the same records, architecture, LoRA settings,
batch and sequence budget, trained by LLaMA-Factory's own SFT workflow (``llamafactory.train.tuner.run_exp``).

LLaMA-Factory is not a dependency of domainvlm: install it beside (``pip install llamafactory`` and what it
needs; on the GPU machine from carried wheels, see docs/benchmarks.md). Its configuration follows its
documentation for Qwen2-VL LoRA at speed: ``template: qwen2_vl``, frozen vision tower and projector, LoRA on
the LM's linear layers, ``enable_liger_kernel``, ``flash_attn: sdpa`` (FlashAttention-2 is not installed there),
its default gradient checkpointing or none, and optionally its ``packing``. The timing is the bench's own
``Meter`` (real tokens entering the model's forward, optimizer steps) through a Trainer callback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_dataset(data: Path, out: Path) -> str:
    """Our record JSONL as a LLaMA-Factory sharegpt dataset (``messages`` + ``images``) with its
    dataset_info.json; returns the dataset's name."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for line in data.read_text().splitlines():
        r = json.loads(line)
        rows.append({"messages": r["messages"], "images": [str((data.parent / p).resolve()) for p in r["images"]]})
    (out / "bench.json").write_text(json.dumps(rows))
    info = {"bench": {"file_name": "bench.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "images": "images"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant", "system_tag": "system"}}}
    (out / "dataset_info.json").write_text(json.dumps(info))
    return "bench"


def lf_args(base: Path, dataset_dir: Path, out: Path, opts: dict, batch: int, max_steps: int, workers: int,
            lora: dict, cuda: bool) -> dict:
    args = {
        "model_name_or_path": str(base), "trust_remote_code": False,
        "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
        "lora_target": ",".join(lora["targets"]),
        "freeze_vision_tower": True, "freeze_multi_modal_projector": True,
        "dataset": "bench", "dataset_dir": str(dataset_dir), "template": "qwen2_vl", "cutoff_len": 1024,
        "overwrite_cache": True, "preprocessing_num_workers": 1, "dataloader_num_workers": workers,
        "image_max_pixels": 448 * 448,
        "output_dir": str(out), "overwrite_output_dir": True, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
        "max_steps": max_steps, "lr_scheduler_type": "cosine", "warmup_steps": 0, "seed": 0,
        "bf16": cuda, "flash_attn": "sdpa", "enable_liger_kernel": bool(opts.get("liger")) and cuda,
        "disable_gradient_checkpointing": not opts.get("gc", True), "packing": bool(opts.get("packing")),
        "plot_loss": False, "ddp_timeout": 180000000,
    }
    if not cuda:
        args["use_cpu"] = True
    return args


def run_lf(args, opts: dict, data: Path, saved_base, meter_cls, lora: dict) -> dict:
    """Train with LLaMA-Factory; the Meter counts tokens and times steps exactly as for the other runners."""
    import torch
    from transformers import TrainerCallback

    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # it pins transformers <= 5.6; we run what is installed
    os.environ.setdefault("WANDB_DISABLED", "true")
    _image_only_processor_without_torchvision()
    _checkpointing_on_transformers5()
    from llamafactory.train.tuner import run_exp

    cuda = torch.cuda.is_available()
    work = Path(args.work)
    base = saved_base(args.arch, work)
    dset = work / "lf-data"
    write_dataset(data, dset)
    holder: dict = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, targs, state, control, model=None, **kw):
            holder["meter"] = meter_cls(model, cuda, nonzero=True)

        def on_step_end(self, *a, **k):
            holder["meter"].step()

    run_exp(args=lf_args(base, dset, work / f"lf-run-{args.one}", opts, args.batch, args.warmup + args.steps, args.workers,
                         lora, cuda), callbacks=[Timer()])
    import llamafactory

    return holder["meter"].result(args.warmup) | {"llamafactory": llamafactory.__version__}


def _image_only_processor_without_torchvision() -> None:
    """Stock AutoProcessor needs torchvision for Qwen2-VL's video processor; where it is missing (a CPU dev
    box: the tiny smoke run) load the image-only processor domainvlm uses. The GPU machine has torchvision,
    so there LLaMA-Factory loads the folder exactly as it would any Qwen2-VL."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return
    import transformers

    from domainvlm.models.loader import load_processor

    transformers.AutoProcessor.from_pretrained = staticmethod(lambda path, *a, **k: load_processor(path))


def _checkpointing_on_transformers5() -> None:
    """LLaMA-Factory 0.9.5's gradient-checkpointing wrapper finds the layer as ``func.func.__self__``:
    transformers 4.x passed a partial of the bound ``forward``; 5.x passes ``partial(forward, layer, ...)``,
    so its default (checkpointed) configuration fails with "'function' object has no attribute '__self__'".
    This binds the layer first, so the wrapper sees what it expects; nothing else of its logic changes."""
    from functools import partial

    import llamafactory.model.model_utils.checkpointing as ck

    make = ck.get_custom_gradient_checkpointing_func
    if getattr(make, "_bench_patched", False):
        return

    def patched(gc_func):
        inner = make(gc_func)

        def call(func, *args, **kwargs):
            if isinstance(func, partial) and not hasattr(func.func, "__self__") and func.args:
                func = partial(func.func.__get__(func.args[0]), *func.args[1:], **func.keywords)
            return inner(func, *args, **kwargs)

        return call

    patched._bench_patched = True
    ck.get_custom_gradient_checkpointing_func = patched
