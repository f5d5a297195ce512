"""Value rules for the training configs, checked right after loading: before any model loads or file is written.

Each rule names a (dotted) field and what it allows; the first field that breaks its rule raises one
:class:`UserError` line naming the field, the value and what is allowed, e.g.
``lr: -1.0 is not allowed (must be > 0)``. Cross-field rules (warm-up longer than training) follow the same
form. Torch-free, so checking a config stays cheap.
"""

from __future__ import annotations

import sys

from ..errors import UserError


class Rule:
    def __init__(self, ok, allowed: str):
        self.ok, self.allowed = ok, allowed


def gt(x) -> Rule:
    return Rule(lambda v: v > x, f"must be > {x}")


def ge(x) -> Rule:
    return Rule(lambda v: v >= x, f"must be >= {x}")


def within(lo, hi, hi_open: bool = False) -> Rule:
    return Rule(lambda v: lo <= v < hi if hi_open else lo <= v <= hi, f"must be in [{lo}, {hi}{')' if hi_open else ']'}")


def one_of(*choices, none_ok: bool = False) -> Rule:
    text = f"must be one of {', '.join(choices)}" + (" (or none)" if none_ok else "")
    return Rule(lambda v: v in choices or (none_ok and v in (None, "")), text)


def optional(rule: Rule) -> Rule:
    """None (the field's "not set") passes; any other value must pass ``rule``."""
    return Rule(lambda v: v is None or rule.ok(v), rule.allowed + " (or none)")


def each(rule: Rule, non_empty: bool = True) -> Rule:
    return Rule(lambda v: (bool(v) or not non_empty) and all(rule.ok(x) for x in v),
                f"must be a{' non-empty' if non_empty else ''} list of values {rule.allowed.removeprefix('must be ')}")


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_rules(cfg, rules: dict[str, Rule]) -> None:
    for name, rule in rules.items():
        v = _get(cfg, name)
        if not rule.ok(v):
            raise UserError(f"{name}: {v!r} is not allowed ({rule.allowed})")


# The configs already warned about, by value: the command and train() check one run twice, and a phased
# recipe rebuilds each phase's config at every check. Not by id(): a freed config's id is reused by the next
# one (a second run in the same process went unwarned) and rebuilt phases have new ids (warned three times).
_WARNED: set[str] = set()


def check_warmup(cfg) -> None:
    """The recipes' warm-up in steps: longer than the run, the learning rate never reaches its peak. A warning,
    not an error: a quick try (``max_steps=100`` under the recipe's 300-step warm-up) is a fair thing to run."""
    if 0 < cfg.max_steps < cfg.warmup_steps and (key := repr(cfg)) not in _WARNED:  # class + every field
        _WARNED.add(key)
        print(f"domainvlm: warning: warmup_steps {cfg.warmup_steps} > max_steps {cfg.max_steps}: the learning rate "
              f"stays below lr ({cfg.lr}) for the whole run; set warmup_steps to change that", file=sys.stderr)


_SIZES = ("image_size", "patch_size", "merge_size", "vision_dim", "vision_depth", "vision_heads", "hidden", "layers",
          "heads", "kv_heads", "intermediate", "vocab_size", "max_position")


def check_compact(compact, prefix: str = "compact.") -> None:
    """The compact model that a run builds (only checked when one is built)."""
    from ..models.compact import RESAMPLE

    for n in _SIZES:
        v = getattr(compact, n)
        if v < 1:
            raise UserError(f"{prefix}{n}: {v!r} is not allowed (must be >= 1)")
    if compact.resample not in RESAMPLE:
        raise UserError(f"{prefix}resample: {compact.resample!r} is not allowed (must be one of {', '.join(RESAMPLE)})")
    for a, b in (("hidden", "heads"), ("heads", "kv_heads"), ("vision_dim", "vision_heads")):
        if getattr(compact, a) % getattr(compact, b):
            raise UserError(f"{prefix}{a}: {getattr(compact, a)} is not allowed (must be a multiple of "
                            f"{prefix}{b}, {getattr(compact, b)})")


# The generic trainer (train/config.py)
SELECT_METRICS = ("val_loss", "exact_match", "macro_f1", "bleu_4", "ce_f1_micro")  # trainer._evaluate's record
TRAIN_RULES = {
    "val_fraction": within(0, 1, hi_open=True), "mode": one_of("full", "lora"),
    "lora.r": ge(1), "lora.alpha": gt(0), "lora.dropout": within(0, 1, hi_open=True),
    "stage": one_of("align", "instruct", none_ok=True), "quantization": one_of("4bit", "8bit", none_ok=True),
    "gradient_checkpointing": within(0, 1),
    "attn_implementation": one_of("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention",
                                  "varlen", none_ok=True),
    "max_steps": ge(0), "epochs": gt(0), "batch_size": ge(1), "grad_accum": ge(1), "lr": gt(0),
    "weight_decay": ge(0), "warmup_ratio": within(0, 1), "min_lr_ratio": within(0, 1), "max_grad_norm": ge(0),
    "max_length": ge(1), "precision": one_of("auto", "bf16", "fp16", "fp32"),
    "eval_every": ge(0), "eval_samples": ge(0), "eval_max_new_tokens": ge(1), "save_every": ge(0),
    "save_total_limit": ge(1), "log_every": ge(1), "select_metric": one_of(*SELECT_METRICS), "num_workers": ge(0),
    "min_pixels": optional(ge(1)), "max_pixels": optional(ge(1)),
}


def check_train(cfg) -> None:
    """TrainConfig's values (domainvlm train, and the library's train())."""
    check_rules(cfg, TRAIN_RULES)
    if cfg.min_pixels and cfg.max_pixels and cfg.min_pixels > cfg.max_pixels:
        raise UserError(f"min_pixels: {cfg.min_pixels} is not allowed (must be <= max_pixels, {cfg.max_pixels})")
    if not cfg.model:
        check_compact(cfg.compact)


# Shared by the two recipes that run their own loop (train/recipe_steps.py: clipping is always on there)
RECIPE_RULES = {
    "max_steps": ge(1), "time_budget_s": ge(0), "batch_size": ge(1), "lr": gt(0), "min_lr_ratio": within(0, 1),
    "warmup_steps": ge(0), "weight_decay": ge(0), "max_grad_norm": gt(0), "ema_decay": within(0, 1, hi_open=True),
    "eval_at": each(Rule(lambda p: 0 < p <= 1, "in (0, 1]")), "log_every": ge(1),
    "kd_loss": ge(0), "kd_temperature": gt(0), "teacher_steps": ge(0), "teacher_batch": ge(1), "teacher_lr": gt(0),
}
FRACTION = within(0, 1)
EXPERT_RULES = RECIPE_RULES | {
    "mixed_frac": FRACTION, "rotate_frac": FRACTION, "superpose_frac": FRACTION, "follow_up_frac": FRACTION,
    "short_answer_frac": FRACTION, "out_of_scope_frac": FRACTION, "new_frac": within(0, 1, hi_open=True),
    "new_overlay_frac": FRACTION, "shift_px": ge(0), "die_noise": within(0, 0.5),
    "wm811k_balance": ge(0), "presence_loss": ge(0), "eval_limit": ge(0), "length_buckets": ge(1),
    "limit_maps": ge(0), "threads": ge(0), "replay_limit": ge(0), "teacher_width": ge(1),
    "teacher_downsample": ge(1), "train_lm_layers": ge(0), "select_drop_limit": ge(0), "select_penalty": ge(0),
    "new_augment": one_of("mirror", "dihedral", "none"), "kd_support": one_of("children", "vocab"),
}
CLASSIFY_RULES = RECIPE_RULES | {
    "jitter": within(0, 1, hi_open=True), "aux_loss": ge(0), "limit": ge(0),
    "input_check_max_reject": Rule(lambda v: v < 1, "must be < 1; < 0: no input check"),
}


def check_expert(cfg) -> None:
    """The wafer expert recipe's values (train-expert); its cross-field rules stay in expert_config._check."""
    check_rules(cfg, EXPERT_RULES)
    check_warmup(cfg)
    if not cfg.init_model:
        check_compact(cfg.compact)


def check_classify(cfg) -> None:
    """The classify expert recipe's values (train-classify)."""
    check_rules(cfg, CLASSIFY_RULES)
    check_warmup(cfg)
    check_compact(cfg.compact)
