"""The three parts of a VLM - vision tower, projector (the vision->text connector), language model - found by
module name for every supported family (Qwen2-VL / Qwen2.5-VL: ``visual`` + ``visual.merger``; LLaVA:
``vision_tower`` + ``multi_modal_projector``). Training options name parts (train/tuning, train/speed)."""

from __future__ import annotations

PARTS = ("vision", "projector", "lm")
_VISION = {"visual", "vision_tower", "vision_model", "vision_encoder"}
_PROJECTOR = {"multi_modal_projector", "merger", "mm_projector"}


def part_of(name: str) -> str:
    """'vision' | 'projector' | 'lm' for a parameter or module name (peft/DDP prefixes are ignored)."""
    segs = name.split(".")
    if any(s in _PROJECTOR for s in segs):
        return "projector"
    if any(s in _VISION for s in segs):
        return "vision"
    return "lm"
