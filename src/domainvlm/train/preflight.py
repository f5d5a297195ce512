"""The generic trainer's checks that need more than the config's own values (those are config_checks.py): run
before training writes anything, each a one-line :class:`UserError` where the trainer or transformers would
otherwise stop with a traceback (or, on --resume, silently train something else than asked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from .tracking import flatten

# What a checkpoint's weights and optimizer state are: a resumed run must load them as they were saved (a
# changed rank or mode fails in peft/torch with a traceback; a changed base or lora.alpha under LoRA, or any
# base under full fine-tuning, is silently replaced by the checkpoint's own).
RESUME_FIELDS = ("model", "mode", "lora", "train_vision", "train_projector", "train_lm", "stage", "init_adapter",
                 "quantization")
_PATHS = ("model", "init_adapter")


def _saved_config(ckpt: Path, out: Path) -> dict | None:
    """The config the checkpoint was trained with: its own copy (checkpoint.py), else the run's train_config.json
    (checkpoints written before the copy was kept); None when neither can be read."""
    for f in (ckpt / "train_config.json", out / "train_config.json"):
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def _same(key: str, a, b) -> bool:
    if a == b:
        return True
    # a folder named another way (relative from elsewhere, a trailing slash) is still the same folder
    return key in _PATHS and a is not None and b is not None and Path(a).expanduser().resolve() == \
        Path(b).expanduser().resolve()


def check_resume(cfg, ckpt: Path, out: Path) -> None:
    """--resume with settings that change what was trained: one line naming each field that differs."""
    saved = _saved_config(ckpt, out)
    if saved is None:
        return
    fields = RESUME_FIELDS + (("compact",) if not cfg.model else ())  # the compact model built from compact.*
    now = flatten({k: v for k, v in to_dict(cfg).items() if k in fields})
    then = flatten({k: v for k, v in saved.items() if k in fields})
    diff = [f"{k}: {then[k]} there, {now[k]} here" for k in now if k in then and not _same(k, then[k], now[k])]
    if diff:
        raise UserError(f"--resume: {ckpt} was trained with other settings ({'; '.join(diff)}): resume with the "
                        "checkpoint's settings, or train into a new output_dir")


# attn_implementation -> (module, package, transformers' version number)
_FLASH = {"flash_attention_2": ("flash_attn", "flash-attn", 2),
          "flash_attention_3": ("flash_attn_interface", "flash-attn-3", 3)}


def check_attention(cfg) -> None:
    """FlashAttention needs its package (or a cached kernels-hub build) and a CUDA GPU; transformers says so
    with a traceback only once the model loads, after the run folder is made."""
    if cfg.attn_implementation not in _FLASH:
        return
    from transformers.utils import import_utils as iu

    module, package, version = _FLASH[cfg.attn_implementation]
    ok = getattr(iu, f"is_flash_attn_{version}_available")
    # the kernels-hub fallback is transformers' own; tried only without the package (it asks the hub)
    if ok() or (importlib.util.find_spec("kernels") and ok(kernels_fallback_ok=True)):
        return
    why = (f"the {package} package is not installed" if importlib.util.find_spec(module) is None
           else f"{package} is installed but cannot run here (it needs a CUDA GPU)")
    raise UserError(f"attn_implementation={cfg.attn_implementation}: {why}; use sdpa (the default), or varlen "
                    "with packing=true (torch's own flash attention, no package)")


def check_lengths(records, processor, cfg, base_dir, n: int = 64) -> None:
    """max_length must hold each sample's image tokens (a cut image cannot be encoded). Checked on up to ``n``
    records spread over the data, so a large set costs no full pass; a record the sample missed still stops
    as one line (dataset.py), but mid-run."""
    from .dataset import RecordDataset, TooShort

    sample = records[:: max(1, len(records) // n)][:n]
    ds = RecordDataset(sample, processor, cfg.max_length, base_dir)
    short = []
    for i in range(len(ds)):
        try:
            ds[i]
        except TooShort as e:
            short.append(e)
    if short:  # the one needing the most: the max_length that fits every record sampled
        worst = max(short, key=lambda e: e.needed)
        raise TooShort(worst.record_id, worst, f" ({len(short)} of the {len(ds)} records checked are cut)")
