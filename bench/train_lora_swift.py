"""The ms-swift runner of ``bench/train_lora_bench.py``: the same records, architecture, LoRA settings, batch and
sequence budget as the other runners, trained by ms-swift's own SFT pipeline (``swift.pipelines.train.sft.SwiftSft``,
what ``swift sft`` and ``swift.sft_main`` run).

ms-swift is not a dependency of domainvlm: install it beside (``pip install ms-swift``; on the GPU machine from
carried wheels, ``scripts/swift-wheels.sh``, see docs/benchmarks.md). Its configuration follows its Qwen2-VL
LoRA examples: ``model_type``/``template`` ``qwen2_vl``, ``tuner_type lora`` on the LM's linear layers,
``freeze_vit`` and ``freeze_aligner``, ``attn_impl sdpa`` (FlashAttention-2 is not installed there), its default
gradient checkpointing or none, ``use_liger_kernel`` or not. Its ``packing`` needs a FlashAttention
implementation (ms-swift refuses it otherwise), so ``swift_packing`` runs only where flash-attn is installed.
The model is the bench's saved local folder; nothing is fetched from a hub (``check_model`` off, ``use_hf``).
Timing is the bench's own ``Meter`` (tokens entering the model's forward, optimizer steps).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_dataset(data: Path, out: Path) -> Path:
    """Our record JSONL in ms-swift's standard format: ``messages`` (system / user / assistant turns, the
    ``<image>`` tag where the image goes) and ``images`` (absolute paths). Returns the JSONL's path."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for line in data.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        msgs = [{"role": m["role"], "content": m["content"]} for m in r["messages"]]
        rows.append({"messages": msgs, "images": [str((data.parent / p).resolve()) for p in r["images"]]})
    path = out / "bench.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return path


def swift_args(base: Path, dataset: Path, out: Path, opts: dict, batch: int, max_steps: int, workers: int,
               lora: dict, cuda: bool) -> dict:
    """Keyword arguments of ms-swift's ``SftArguments`` for one variant (the same budget as LLaMA-Factory's)."""
    packing = bool(opts.get("packing"))
    args = {
        "model": str(base), "model_type": "qwen2_vl", "template": "qwen2_vl", "use_hf": True, "check_model": False,
        "tuner_type": "lora", "lora_rank": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
        "target_modules": list(lora["targets"]), "freeze_vit": True, "freeze_aligner": True, "freeze_llm": False,
        "dataset": [str(dataset)], "split_dataset_ratio": 0.0, "max_length": 1024, "truncation_strategy": "delete",
        "dataset_num_proc": 1, "load_from_cache_file": False,
        "dataloader_num_workers": workers, "dataset_shuffle": True, "data_seed": 0,
        "output_dir": str(out), "add_version": False, "logging_steps": 1, "save_strategy": "no", "report_to": ["none"],
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
        "max_steps": max_steps, "lr_scheduler_type": "cosine", "warmup_steps": 0, "seed": 0,
        "torch_dtype": "bfloat16" if cuda else "float32", "bf16": cuda,
        "attn_impl": "flash_attn" if packing else "sdpa", "packing": packing,
        "use_liger_kernel": bool(opts.get("liger")) and cuda,
        "gradient_checkpointing": bool(opts.get("gc", True)),
    }
    if not cuda:
        args["use_cpu"] = True
    return args


def run_swift(args, opts: dict, data: Path, saved_base, meter_cls, lora: dict) -> dict:
    """Train with ms-swift's SFT pipeline; the Meter counts tokens and times steps as for the other runners."""
    import torch
    from transformers import TrainerCallback

    os.environ.setdefault("USE_HF", "1")  # hub lookups (none are made for a local folder) go nowhere near modelscope
    os.environ.setdefault("WANDB_DISABLED", "true")
    os.environ.setdefault("MAX_PIXELS", str(448 * 448))
    _image_only_processor_without_torchvision()
    from swift.arguments import SftArguments
    from swift.pipelines.train.sft import SwiftSft

    cuda = torch.cuda.is_available()
    work = Path(args.work)
    base = saved_base(args.arch, work)
    _media_token_ids_from(base)
    dset = write_dataset(data, work / "swift-data")
    holder: dict = {}

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            holder["meter"].step()

    class BenchSft(SwiftSft):
        def train(self, trainer):
            # Before ms-swift's own forward pre-hook (registered inside trainer.train, on the same PeftModel), which
            # replaces input_ids / pixel_values by inputs_embeds: the Meter sees the batch as collated.
            holder["meter"] = meter_cls(trainer.model, cuda, nonzero=True)
            trainer.add_callback(Timer())
            return super().train(trainer)

    sa = SftArguments(**swift_args(base, dset, work / f"swift-run-{args.one}", opts, args.batch,
                                   args.warmup + args.steps, args.workers, lora, cuda))
    res = BenchSft(sa).main()
    import swift

    losses = [round(x["loss"], 5) for x in (res or {}).get("log_history", []) if "loss" in x][:3]
    return holder["meter"].result(args.warmup) | {"swift": swift.__version__, "losses": losses}


def _media_token_ids_from(base: Path) -> None:
    """ms-swift's Qwen2-VL template finds the image placeholders by the ids of Qwen2-VL's own tokenizer
    (class attributes ``image_token_id = 151655``, ``video_token_id = 151656``); the bench's random model has a
    small tokenizer of its own with other ids (its config says which). Point the template at those: the same
    lookup on the folder's tokenizer, nothing else of its encoding changes."""
    from swift.template.templates.qwen import Qwen2VLTemplate

    cfg = json.loads((base / "config.json").read_text())
    Qwen2VLTemplate.image_token_id = cfg["image_token_id"]
    Qwen2VLTemplate.video_token_id = cfg["video_token_id"]


def _image_only_processor_without_torchvision() -> None:
    """As in the LLaMA-Factory runner: without torchvision (a CPU dev box) stock AutoProcessor cannot build
    Qwen2-VL's video processor, so load domainvlm's image-only processor. ms-swift's Qwen2-VL template also
    needs ``qwen_vl_utils``, which imports torchvision at the top for its video readers (images go through PIL):
    it is imported here against placeholder modules that are removed again at once, so transformers still sees
    no torchvision. The GPU machine has torchvision, so there none of this happens."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return
    import sys
    import types

    import transformers

    from domainvlm.models.loader import load_processor

    transformers.AutoProcessor.from_pretrained = staticmethod(lambda path, *a, **k: load_processor(path))
    tv, io, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.io", "torchvision.transforms",
                                                    "torchvision.transforms.functional"))
    tr.InterpolationMode = types.SimpleNamespace(NEAREST="nearest", BILINEAR="bilinear", BICUBIC="bicubic")
    tv.io, tv.transforms, tr.functional, tv.__version__ = io, tr, fn, "0.0"
    stubs = {m.__name__: m for m in (tv, io, tr, fn)}
    sys.modules.update(stubs)
    try:
        import qwen_vl_utils.vision_process  # noqa: F401
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
