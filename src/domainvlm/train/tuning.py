"""What is trained: full fine-tuning or LoRA adapters (peft)."""

from __future__ import annotations

from ..errors import UserError


def apply_tuning(model, cfg):
    """Return the model to optimise, with requires_grad set according to ``cfg.mode``."""
    if cfg.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in cfg.lora.target_modules if t not in names and t != "all-linear"]
        if missing:
            raise UserError(f"lora.target_modules: no module named {', '.join(missing)} in this model")
        targets = "all-linear" if cfg.lora.target_modules == ["all-linear"] else cfg.lora.target_modules
        lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
        return get_peft_model(model, lc)
    raise UserError(f"mode: unknown tuning mode {cfg.mode!r} (use full or lora)")


def count_trainable(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total
