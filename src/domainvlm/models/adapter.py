"""LoRA/QLoRA adapter folders: read their config, resolve their base, check that they fit a model.

Used by the loader (an adapter folder loads onto its base), by training (``init_adapter``) and by export.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

_PREFIX = "base_model.model."


def read_adapter_config(adapter: Path) -> dict:
    p = Path(adapter) / "adapter_config.json"
    if not Path(adapter).is_dir():
        raise UserError(f"{adapter}: no such adapter folder")
    if not p.exists():
        if (Path(adapter) / "config.json").exists():
            raise UserError(f"{adapter}: a full model folder, not a LoRA adapter - nothing to merge")
        raise UserError(f"{adapter}: no adapter_config.json (not a LoRA adapter folder)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: malformed JSON ({e.msg}, line {e.lineno})") from None


def resolve_base(adapter: Path, base: str | Path | None) -> Path:
    """The base folder: given explicitly, else the one recorded in adapter_config.json (relative to it)."""
    cfg = read_adapter_config(adapter)
    if base is None:
        rec = cfg.get("base_model_name_or_path")
        if not rec:
            raise UserError(f"{adapter / 'adapter_config.json'}: field 'base_model_name_or_path' missing; pass --base")
        base = Path(rec).expanduser()
        if not base.is_absolute() and (adapter / base).exists():
            base = (adapter / base).resolve()
        where = f"{adapter / 'adapter_config.json'}: field 'base_model_name_or_path': "
    else:
        base, where = Path(base).expanduser(), "--base: "
    if not base.is_dir():
        raise UserError(f"{where}base model directory {base} not found (bases load from local folders only)")
    if not (base / "config.json").exists():
        raise UserError(f"{where}{base} has no config.json (not a Hugging Face model folder)")
    return base


def _dims(cfg: dict) -> tuple:
    t = cfg.get("text_config") or cfg
    return (cfg.get("model_type"), t.get("hidden_size"), t.get("num_hidden_layers"), t.get("vocab_size"))


def check_adapter_fits(model, adapter: str | Path, base: str | Path | None = None) -> None:
    """One clear error when ``adapter`` was trained for another base: a different recorded base family or
    size, a module the model lacks, or a LoRA matrix whose shape does not fit its layer. (peft itself only
    warns about missing keys, and would silently put a same-shaped adapter on the wrong model.)"""
    adapter = Path(adapter)
    cfg = read_adapter_config(adapter)
    mcfg = model.config.to_dict()
    rec = Path(str(cfg.get("base_model_name_or_path") or "")).expanduser()
    if rec.name and (rec / "config.json").exists() and (base is None or rec.resolve() != Path(base).resolve()):
        rdims = _dims(json.loads((rec / "config.json").read_text(encoding="utf-8")))
        if rdims != _dims(mcfg):
            raise UserError(f"{adapter}: adapter was trained on {rec} ({rdims[0]}, hidden {rdims[1]}, {rdims[2]} "
                            f"layers), not on this base ({_dims(mcfg)[0]}, hidden {_dims(mcfg)[1]}, "
                            f"{_dims(mcfg)[2]} layers)")
    wfile = adapter / "adapter_model.safetensors"
    if not wfile.exists():
        raise UserError(f"{adapter}: adapter_model.safetensors missing (only safetensors adapters are read)")
    from safetensors import safe_open

    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    by_suffix: dict[str, list[str]] = {}
    with safe_open(str(wfile), "pt") as f:
        keys = {k: f.get_slice(k).get_shape() for k in f.keys()}
    for key, shape in keys.items():
        k = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if ".lora_A." in k or ".lora_B." in k:
            mod_name, ab = k.split(".lora_")[0], k.split(".lora_")[1][0]
            mod = modules.get(mod_name) or _by_suffix(modules, mod_name, by_suffix)
            if mod is None:
                raise UserError(f"{adapter}: adapter for another base - it adapts '{mod_name}', which this base "
                                f"({_dims(mcfg)[0]}) does not have")
            want = getattr(mod, "in_features", None) if ab == "A" else getattr(mod, "out_features", None)
            got = shape[1] if ab == "A" else shape[0]
            if want is not None and got != want:
                raise UserError(f"{adapter}: adapter for another base - '{mod_name}' has "
                                f"{'input' if ab == 'A' else 'output'} size {want} here, {got} in the adapter")
        elif k not in params and _by_suffix(params, k, by_suffix) is None:
            raise UserError(f"{adapter}: adapter for another base - its weight '{k}' has no counterpart here")


def _by_suffix(named: dict, name: str, cache: dict):
    """Tolerate older checkpoint layouts ('model.layers.0...' vs 'model.language_model.layers.0...')."""
    tail = ".".join(name.split(".")[-5:])
    if tail not in cache:
        cache[tail] = [n for n in named if n == tail or n.endswith("." + tail)]
    hits = cache[tail]
    return named[hits[0]] if len(hits) == 1 else None
