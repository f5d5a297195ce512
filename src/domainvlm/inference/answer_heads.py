"""Optional structured answer heads, chosen by the model folder's config (``config.domainvlm.answer_head``).

A head replaces free decoding for the parts of an answer that have a closed vocabulary (e.g. the wafer
diagnosis line), which makes answers always parseable and decoding fast. Models without the key decode freely.
"""

from __future__ import annotations

HEADS: dict = {}


def register(name: str):
    def deco(fn):
        HEADS[name] = fn
        return fn

    return deco


def for_model(model):
    cfg = getattr(getattr(model, "config", None), "domainvlm", None) or {}
    name = cfg.get("answer_head") if isinstance(cfg, dict) else None
    if not name:
        return None
    if name not in HEADS:
        from ..errors import UserError

        raise UserError(f"model config: unknown answer_head {name!r} (known: {', '.join(sorted(HEADS)) or 'none'})")
    return HEADS[name]


from ..domains.wafer import head  # noqa: E402,F401  (registers "wafer-diagnosis", the bundled wafer expert's head)
