"""What is trained: full fine-tuning or LoRA/QLoRA adapters, per part of the model.

A VLM has three parts - vision tower, projector (the vision->text connector) and language model - and
recipes differ in which of them learn: LLaVA-style alignment trains only the projector, instruction tuning
adds LoRA on the language model, some recipes also adapt the vision tower. Parts are found by module name
for every supported family (Qwen2-VL / Qwen2.5-VL: ``visual`` + ``visual.merger``; LLaVA: ``vision_tower``
+ ``multi_modal_projector``), so each option changes exactly the parameters it names.
"""

from __future__ import annotations

import re

from ..errors import UserError
from ..models.parts import PARTS, part_of

_WRAPPERS = {"base_model", "module", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def n_weights(p) -> int:
    """Weights a parameter holds. bitsandbytes' 4-bit ``Params4bit`` packs two per byte of its storage (uint8:
    2 per element), so its numel() undercounts: peft's get_nb_trainable_parameters rule, here for any model
    (peft's method needs a PeftModel) and without importing bitsandbytes (matched by class name, as peft does)."""
    return p.numel() * 2 * p.element_size() if type(p).__name__ == "Params4bit" else p.numel()


def count_trainable(model) -> tuple[int, int]:
    total = sum(n_weights(p) for p in model.parameters())
    train = sum(n_weights(p) for p in model.parameters() if p.requires_grad)
    return train, total


def count_by_part(model) -> dict[str, tuple[int, int]]:
    """{part: (trainable, total)} parameter counts; LoRA and modules_to_save copies count in their part."""
    out = {p: [0, 0] for p in PARTS}
    for name, p in model.named_parameters():
        c = out[part_of(name)]
        c[1] += n_weights(p)
        c[0] += n_weights(p) if p.requires_grad else 0
    return {k: (v[0], v[1]) for k, v in out.items()}


def resolve_parts(cfg) -> dict[str, bool]:
    """Which parts are trained densely (all their weights). Defaults: everything for full, nothing for LoRA."""
    dense = cfg.mode == "full"
    want = {"vision": cfg.train_vision, "projector": cfg.train_projector, "lm": cfg.train_lm}
    if cfg.stage == "align":  # LLaVA stage 1: only the connector learns to map image features into the LM
        if cfg.mode != "full":
            raise UserError("stage: 'align' trains the projector alone; use mode=full with it (LoRA comes in stage 2)")
        want = {"vision": False, "projector": True, "lm": False}
    elif cfg.stage not in (None, "", "instruct"):
        raise UserError(f"stage: unknown stage {cfg.stage!r} (use align or instruct)")
    return {k: dense if v is None else bool(v) for k, v in want.items()}


def parse_layers(spec: str | None, n: int) -> set[int] | None:
    """'0-3,10' -> {0,1,2,3,10}; negative numbers count from the end ('-4--1' = last four)."""
    if spec is None or str(spec).strip() in ("", "all"):
        return None
    out: set[int] = set()
    for part in str(spec).replace(" ", "").split(","):
        m = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if not m:
            raise UserError(f"lora.layers: cannot read {part!r} (use e.g. 0-7,12 or -4--1)")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
        if not (0 <= a <= b < n):
            raise UserError(f"lora.layers: {part!r} is outside the language model's {n} layers (0-{n - 1})")
        out.update(range(a, b + 1))
    return out


def _is_linear(module) -> bool:
    import torch

    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, so QLoRA targets are found the same way.
    return isinstance(module, torch.nn.Linear)


def lora_targets(model, cfg) -> list[str]:
    """Exact module names that get LoRA: language-model linears (within lora.layers), vision ones if asked."""
    wanted = list(cfg.lora.target_modules)
    all_linear = wanted == ["all-linear"]
    linears = [(n, part_of(n)) for n, m in model.named_modules() if _is_linear(m)]
    n_layers = 1 + max((int(m.group(1)) for n, p in linears if p == "lm" for m in [_LAYER.search(n)] if m),
                       default=-1)
    layers = parse_layers(cfg.lora.layers, n_layers)
    parts = ({"lm"} if cfg.lora.lm else set()) | ({"vision"} if cfg.lora.vision else set())
    if not parts:
        raise UserError("lora: both lora.lm and lora.vision are false - no module would get an adapter")
    names = []
    for n, part in linears:
        leaf = n.rsplit(".", 1)[-1]
        if part not in parts or (leaf == "lm_head" and "lm_head" not in wanted):
            continue
        if part == "lm" and not all_linear and leaf not in wanted:
            continue  # (the vision tower, when adapted, gets LoRA on every linear: its names differ per family)
        if part == "lm" and layers is not None:
            m = _LAYER.search(n)
            if not m or int(m.group(1)) not in layers:
                continue
        names.append(n)
    if not all_linear and "lm" in parts:
        found = {n.rsplit(".", 1)[-1] for n in names if part_of(n) == "lm"}
        missing = [t for t in wanted if t not in found]
        if missing:
            avail = sorted({n.rsplit(".", 1)[-1] for n, p in linears if p == "lm"})
            raise UserError(f"lora.target_modules: no module named {', '.join(missing)} in this model's language "
                            f"model (its linear layers: {', '.join(avail)})")
    if not names:
        raise UserError("lora.layers: no linear layer of the language model lies in the given layer range")
    return names


def _part_roots(model, part: str) -> list[str]:
    """Top-most modules made only of ``part``'s parameters (Qwen's ``visual`` holds the projector ``merger``,
    so training its vision tower densely means ``visual.patch_embed`` + ``visual.blocks``, not ``visual``)."""
    import torch

    pure = {}
    for n, m in model.named_modules():
        names = [f"{n}.{p}" for p, _ in m.named_parameters()]
        pure[n] = bool(n) and bool(names) and all(part_of(x) == part for x in names)
    roots = [n for n, ok in pure.items() if ok and not pure.get(n.rsplit(".", 1)[0] if "." in n else "", False)]
    mods, out = dict(model.named_modules()), []
    for r in roots:  # peft cannot wrap a ModuleList in modules_to_save: list its blocks instead
        lists = (torch.nn.ModuleList, torch.nn.ModuleDict)
        out += [f"{r}.{c}" for c in mods[r]._modules] if isinstance(mods[r], lists) else [r]
    return out


def apply_tuning(model, cfg):
    """Return the model to optimise, with requires_grad set according to cfg (mode, train_*, lora.*)."""
    if cfg.mode not in ("full", "lora"):
        raise UserError(f"mode: unknown tuning mode {cfg.mode!r} (use full or lora)")
    if cfg.quantization and cfg.mode != "lora":
        raise UserError(f"quantization: {cfg.quantization} weights cannot be trained directly; use mode=lora (QLoRA)")
    parts = resolve_parts(cfg)
    if cfg.init_adapter:
        model = _load_adapter(model, cfg.init_adapter)
    elif cfg.mode == "lora":
        model = _add_lora(model, cfg, parts)
    if cfg.mode == "full" or cfg.init_adapter:
        for name, p in model.named_parameters():
            is_adapter = "lora_" in name or "modules_to_save" in name
            p.requires_grad_(is_adapter or (parts[part_of(name)] and not cfg.quantization))
    if count_trainable(model)[0] == 0:
        raise UserError("train_vision/train_projector/train_lm: all false - nothing would be trained")
    return model


def _add_lora(model, cfg, parts):
    from peft import LoraConfig, get_peft_model

    if parts["lm"]:
        raise UserError("train_lm: true trains every language-model weight; use mode=full for that (LoRA adapts it)")
    if parts["vision"] and cfg.lora.vision:
        raise UserError("train_vision and lora.vision: pick one - the vision tower is either trained or adapted")
    save = [r for part in ("vision", "projector") if parts[part] for r in _part_roots(model, part)]
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=lora_targets(model, cfg), modules_to_save=save or None, task_type="CAUSAL_LM")
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, lc)


def _load_adapter(model, path):
    """Continue training an existing adapter (two-stage recipes, warm starts)."""
    from pathlib import Path

    from peft import PeftModel

    p = Path(path).expanduser()
    if not (p / "adapter_config.json").exists():
        raise UserError(f"init_adapter: {p} has no adapter_config.json (not a LoRA adapter folder)")
    from ..models.adapter import check_adapter_fits

    check_adapter_fits(model, p)
    return PeftModel.from_pretrained(model, str(p), is_trainable=True)


def apply_memory_options(model, cfg) -> None:
    """Gradient checkpointing on a fraction of the language-model layers (1.0 = all, as in HF; 0 = off).

    Checkpointing trades a second forward pass for activation memory; a fraction keeps the rest of the layers'
    activations, so memory freed elsewhere (answer-only logits, packing) buys back speed. ``compile``
    compiles the decoder layers, ``liger_kernels`` patches in fused Triton kernels (train/speed.py). Also turns
    the KV cache off for training.
    """
    frac = float(cfg.gradient_checkpointing or 0)
    if not 0 <= frac <= 1:
        raise UserError(f"gradient_checkpointing: {frac} is not a fraction between 0 and 1 (or true/false)")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "use_cache", None) is not None:
        base.config.use_cache = False
    text = getattr(base.config, "text_config", None)
    if text is not None:
        text.use_cache = False
    if frac > 0:
        _checkpoint_layers(base, frac)
    if getattr(cfg, "compile", False):
        from .speed import compile_layers

        compile_layers(base)
    if getattr(cfg, "liger_kernels", False):
        from .speed import liger_kernels

        liger_kernels(base)


def _checkpoint_layers(base, frac: float) -> None:
    # non-reentrant checkpointing needs no input-grad hooks and works under DDP with frozen layers
    kw = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    layers = [m for n, m in base.named_modules() if part_of(n) == "lm" and hasattr(m, "gradient_checkpointing")
              and re.search(r"\.layers\.\d+$", n)]
    keep = round(frac * len(layers))
    for i, m in enumerate(layers):
        m.gradient_checkpointing = i < keep
    for n, m in base.named_modules():  # frozen towers store nothing for backward: recomputing them is waste
        if part_of(n) != "lm" and hasattr(m, "gradient_checkpointing") and not any(
                p.requires_grad for p in m.parameters()):
            m.gradient_checkpointing = False
