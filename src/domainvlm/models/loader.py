"""One loader for every model folder: the bundled compact expert, a real local base (Qwen2-VL, Qwen2.5-VL,
LLaVA, ...), or a peft LoRA adapter folder on top of either. Local and offline only; no remote code unless
asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError

# The model that ships inside the package; the default for ask/eval/chat/serve.
BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "wafer-expert"
QWEN_FAMILY = {"qwen2_vl", "qwen2_5_vl"}


def default_model_dir() -> Path:
    env = os.environ.get("DOMAINVLM_MODEL")
    return Path(env) if env else BUNDLED


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: malformed JSON ({e.msg}, line {e.lineno})") from None


def inspect_dir(path: str | Path) -> dict:
    """What is in a model folder: {'kind': 'model'|'adapter', 'model_type', 'base'}."""
    p = Path(path).expanduser()
    if p.is_file():
        raise UserError(f"{p}: a file, not a model folder (give the folder holding config.json and the weights)")
    if not p.is_dir():
        raise UserError(f"{p}: model directory not found (models load from local folders only)")
    if (p / "adapter_config.json").exists():
        cfg = _read_json(p / "adapter_config.json")
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise UserError(f"{p / 'adapter_config.json'}: field 'base_model_name_or_path' missing")
        return {"kind": "adapter", "base": base, "model_type": None}
    if not (p / "config.json").exists():
        raise UserError(f"{p}: no config.json (not a Hugging Face model folder)")
    cfg = _read_json(p / "config.json")
    if "model_type" not in cfg:
        raise UserError(f"{p / 'config.json'}: field 'model_type' missing")
    return {"kind": "model", "model_type": cfg["model_type"], "base": None}


def answer_head_name(path: str | Path, strict: bool = False) -> str | None:
    """``config.domainvlm.answer_head`` of a model folder (a LoRA adapter: of its base), read without loading
    the model; None when it names none or the folder cannot be read (loading it says why). ``strict``: a folder
    that cannot be read raises the UserError saying why (for callers whose next words would be "no head")."""
    from .adapter import resolve_base

    folder = Path(path).expanduser()
    if strict and inspect_dir(folder)["kind"] == "adapter" and not (folder / "config.json").is_file():
        inspect_dir(resolve_base(folder, None))
    try:
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            folder = resolve_base(folder, None)
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UserError):
        return None
    head = (cfg.get("domainvlm") or {}).get("answer_head") if isinstance(cfg, dict) else None
    return head if isinstance(head, str) else None


def load_processor(path: str | Path, trust_remote_code: bool = False, min_pixels: int | None = None,
                   max_pixels: int | None = None, base: str | Path | None = None):
    """The folder's processor. Qwen2-VL-family folders get the image-only processor built from their files,
    whatever processor class they name; ``min_pixels``/``max_pixels`` set its image resolution.

    A LoRA adapter folder gets the processor saved beside it when it holds one: the one it was trained with
    (its min_pixels/max_pixels, its chat template), which the base's need not be. A bare peft folder gets its
    base's (``base``: that folder, else the one adapter_config.json records)."""
    from .folder_check import check_chat_template, has_processor, processor_problem

    path = Path(path).expanduser()
    info = inspect_dir(path)
    if info["kind"] == "adapter":
        from .adapter import resolve_base

        base = resolve_base(path, base)
        info = inspect_dir(base)
        path = path if has_processor(path) else base
    if info["model_type"] not in QWEN_FAMILY and (min_pixels is not None or max_pixels is not None):
        raise UserError(f"{path}: --min-pixels/--max-pixels apply to Qwen2-VL-family models only "
                        f"(this is {info['model_type']})")
    try:
        proc = _build_processor(path, info["model_type"], trust_remote_code, min_pixels, max_pixels)
    except (OSError, ValueError) as e:  # transformers names a hub URL or a backend class, not the file
        raise processor_problem(Path(path), e) from None
    # AutoProcessor silently falls back to a bare tokenizer when the image processor can't be built.
    if not hasattr(proc, "image_processor"):
        raise processor_problem(Path(path))
    check_chat_template(Path(path), proc)
    return proc


def _build_processor(path, model_type: str, trust_remote_code: bool, min_pixels, max_pixels):
    if model_type in QWEN_FAMILY:
        from .processor import ImageOnlyQwen2VLProcessor

        return ImageOnlyQwen2VLProcessor.from_dir(str(path), min_pixels=min_pixels, max_pixels=max_pixels)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)


def _model_class(model_type: str):
    import transformers

    named = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
             "llava": "LlavaForConditionalGeneration"}
    if model_type in named:
        return getattr(transformers, named[model_type])
    return transformers.AutoModelForImageTextToText


def load_model(path: str | Path | None = None, device: str | None = None, dtype: str | None = None,
               quantization: str | None = None, trust_remote_code: bool = False, attn_implementation=None,
               min_pixels: int | None = None, max_pixels: int | None = None):
    """Load (model, processor) from a local folder. ``path`` None -> the bundled default model.

    dtype: 'float32' | 'bfloat16' | 'float16' | None (bf16 on CUDA, fp32 on CPU).
    quantization: None | '4bit' | '8bit' (bitsandbytes; language model only, vision tower kept unquantized).
    min_pixels / max_pixels: the image resolution budget of Qwen2-VL-family processors (None: the folder's).
    """
    import torch

    path = Path(path).expanduser() if path else default_model_dir()
    if not path.exists() and path == BUNDLED:
        raise UserError(f"{path}: the bundled model is missing from this install; pass --model DIR")
    info = inspect_dir(path)
    adapter = None
    if info["kind"] == "adapter":
        adapter, path = path, Path(info["base"]).expanduser()
        if not path.is_absolute():
            path = (adapter / path).resolve() if (adapter / path).exists() else path
        if not path.is_dir():
            raise UserError(f"{adapter / 'adapter_config.json'}: field 'base_model_name_or_path': base model "
                            f"directory {path} not found (bases load from local folders only)")
        info = inspect_dir(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    kw = {"dtype": getattr(torch, dtype), "local_files_only": True, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if quantization:
        from .quant import bnb_config

        kw["quantization_config"] = bnb_config(quantization, info["model_type"], compute_dtype=kw["dtype"])
        kw["device_map"] = {"": device}  # bitsandbytes quantizes while loading onto the target device
    # the processor first: it is cheap and its files are checked, so a damaged folder fails before the weights load
    processor = load_processor(adapter or path, trust_remote_code, min_pixels, max_pixels, base=path)
    from safetensors import SafetensorError

    try:
        model = _model_class(info["model_type"]).from_pretrained(str(path), **kw)
    except SafetensorError as e:
        from .folder_check import weights_problem

        raise weights_problem(path, e) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    if adapter is not None:
        from peft import PeftModel

        from .adapter import check_adapter_fits

        check_adapter_fits(model, adapter, path)
        try:
            model = PeftModel.from_pretrained(model, str(adapter))
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"{adapter}: adapter does not fit base {path} ({str(e).splitlines()[0][:200]})") from None
    if not quantization:
        model.to(device)
    model.eval()
    return model, processor
