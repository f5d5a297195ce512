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
    if name not in HEADS:  # [classify hook] heads registered by a domain: factory(model, processor) -> head
        from ..domains import answer_head

        return _domain_head(answer_head(name))
    return HEADS[name]


def _domain_head(factory):
    """A domain head as the engine calls heads, built once per engine (and rebuilt if its model changes)."""
    def call(engine, convs, sampling):
        h = getattr(engine, "_domain_head", None)
        if h is None or h.model is not engine.model:
            h = engine._domain_head = factory(engine.model, engine.processor)
        return h(engine, convs, sampling)

    return call


from . import wafer_head  # noqa: E402,F401  (registers "wafer-diagnosis", the bundled wafer expert's head)
