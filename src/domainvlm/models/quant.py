"""bitsandbytes quantization configs: language model only, vision tower and projector stay unquantized
(quantizing the small vision encoder saves little memory and costs accuracy)."""

from __future__ import annotations

from ..errors import UserError

# Module-name fragments of vision towers / projectors in the supported families.
VISION_MODULES = ["visual", "vision_tower", "vision_model", "multi_modal_projector", "merger", "lm_head"]


def bnb_config(mode: str, model_type: str | None = None):
    import torch
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=VISION_MODULES)
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=VISION_MODULES)
    raise UserError(f"quantization: unknown mode {mode!r} (use 4bit or 8bit)")
