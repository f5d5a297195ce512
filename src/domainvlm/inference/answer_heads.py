"""Answer heads: a model's structured answer path, chosen by its folder's config (``config.domainvlm.answer_head``).

A head replaces free decoding for the parts of an answer that have a closed vocabulary (e.g. the wafer
diagnosis line), which makes answers always parseable and decoding fast. Models without the key decode freely.
Heads are registered by domains (``Domain.answer_heads``, see :mod:`domainvlm.domains`); this module only
defines the hook and finds a model's factory through the registry.

The hook (:class:`AnswerHead`): the engine builds the head once per model with
``factory(model, processor, model_dir)`` and, for every batch and under its lock, calls
``head.answer(convs, sampling)``. The head returns one entry per conversation: the finished answer text, or
``None`` for the engine to decode that conversation freely, exactly as without a head. A head reads its model
and processor; it never calls back into the engine.
"""

from __future__ import annotations

from typing import Callable, Protocol

from .. import domains


class AnswerHead(Protocol):
    def answer(self, convs: list[tuple[list[dict], list]], sampling) -> list[str | None]:
        """convs: [(messages, images)] as :meth:`Engine.generate` takes them; one answer or None per conv."""


def head_name(model) -> str | None:
    """The answer head a loaded model's config names (``config.domainvlm.answer_head``), or None."""
    cfg = getattr(getattr(model, "config", None), "domainvlm", None) or {}
    return cfg.get("answer_head") if isinstance(cfg, dict) else None


def for_model(model) -> Callable | None:
    """The head factory ``(model, processor, model_dir) -> AnswerHead`` the model's config names, or None."""
    name = head_name(model)
    return domains.answer_head(name) if name else None
