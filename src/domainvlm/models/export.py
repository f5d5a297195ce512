"""Merge a LoRA/QLoRA adapter into its base and write a standalone Hugging Face folder.

The merged folder (safetensors weights, processor, chat template) loads with plain ``from_pretrained`` and
needs neither peft nor the base folder. QLoRA adapters are merged into the *full-precision* base, never into
4-bit weights (that is what breaks "QLoRA weights in the demo"): quantize again at load time if wanted
(``load_model(..., quantization='4bit')``). Merging is done in float32 and cast to the output dtype last.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError
from .adapter import check_adapter_fits, resolve_base

PROBE = [{"role": "user", "content": "<image>\nDescribe the findings."}]


def greedy_tokens(model, processor, max_new_tokens: int = 16, image=None) -> list[int]:
    """Greedy continuation of a fixed probe (an image + a question): the export equivalence check."""
    import torch
    from PIL import Image

    from .chat_format import encode_prompt

    image = image or Image.new("RGB", (64, 64), (90, 120, 150))
    enc = encode_prompt(processor, PROBE, [image])
    dtype = next(model.parameters()).dtype
    enc = {k: (v.to(dtype) if k == "pixel_values" else v) for k, v in enc.items()}
    tok = processor.tokenizer
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, min_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def _card(adapter: Path, base: Path, folder: Path, name: str) -> None:
    """The merged folder's card: the adapter card's data, metrics and text; the base's name and licence."""
    from .card import _FM, base_license, base_model_id, read_front_matter, write_card

    src = adapter / "README.md"
    old = read_front_matter(src)
    fm = {"license": old.get("license") or base_license(base), "base_model": base_model_id(base),
          "pipeline_tag": "image-text-to-text", "library_name": "transformers",
          "tags": list(dict.fromkeys([*(old.get("tags") or ["domainvlm"]), "merged"])),
          **{k: old[k] for k in ("datasets", "metrics", "model-index") if k in old}}
    body = _FM.sub("", src.read_text(encoding="utf-8"), count=1).strip() if src.exists() else ""
    if not body or "[More Information Needed]" in body:  # none, or peft's empty template
        body = f"# {name}"
    write_card(folder, fm, f"{body}\n\nMerged from the LoRA adapter `{adapter.name}` with `domainvlm export` "
                           "(standalone: needs neither peft nor the base folder).\n")


def export_merged(adapter: str | Path, out: str | Path, base: str | Path | None = None, dtype: str | None = None,
                  check: bool = False, force: bool = False, trust_remote_code: bool = False) -> dict:
    """Merge ``adapter`` into its base; write a standalone folder at ``out`` (atomically). Returns a summary."""
    import torch
    from peft import PeftModel

    from ..io import swap_in, write_json
    from .loader import _model_class, inspect_dir, load_processor

    adapter, out = Path(adapter).expanduser(), Path(out).expanduser()
    base = resolve_base(adapter, base)
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: output folder exists and is not empty (pass --force to replace it)")
    info = inspect_dir(base)
    bcfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    dtype = dtype or bcfg.get("dtype") or bcfg.get("torch_dtype") or "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"--dtype: {dtype!r} is not one of float32, bfloat16, float16")
    try:  # merge in float32: W + BA in bf16 would round away part of the update
        model = _model_class(info["model_type"]).from_pretrained(str(base), dtype=torch.float32, local_files_only=True,
                                                                 trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"{base}: cannot load base model ({str(e).splitlines()[0]})") from None
    check_adapter_fits(model, adapter, base)
    # the processor the adapter was trained with (saved beside it; a bare peft folder: the base's), so the merged
    # folder answers at the trained resolution with the trained chat template
    proc = load_processor(adapter, trust_remote_code, base=base)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{adapter}: adapter does not fit base {base} ({str(e).splitlines()[0][:200]})") from None
    peft_model.eval()
    ref = greedy_tokens(peft_model, proc) if check else None
    merged = peft_model.merge_and_unload()
    got = greedy_tokens(merged, proc) if check else None
    if check and ref != got:
        raise RuntimeError(f"merged model's greedy tokens differ from the adapter's: {ref} vs {got}")
    merged = merged.to(getattr(torch, dtype))
    merged.config.dtype = dtype
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    proc.save_pretrained(tmp)
    summary = {"base": str(base.resolve()), "adapter": str(adapter.resolve()), "dtype": dtype,
               "model_type": info["model_type"], "greedy_check": None if ref is None else "match"}
    write_json(tmp / "domainvlm_export.json", summary)
    _card(adapter, base, tmp, out.name)
    if force and out.exists():
        shutil.rmtree(out)
    swap_in(tmp, out)
    return summary | {"out": str(out)}
