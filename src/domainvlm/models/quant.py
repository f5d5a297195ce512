"""bitsandbytes quantization: language model only; vision tower, projector and LM head stay unquantized.

Quantizing the small vision encoder saves little memory and costs accuracy, and the LM head's precision
matters for every token. transformers matches these names from the start of a module's full name (or as a
suffix), so the real module paths are listed - a bare 'visual' would not match 'model.visual.blocks.0...'.
"""

from __future__ import annotations

from ..errors import UserError

SKIP_MODULES = ["model.visual", "model.vision_tower", "model.vision_model", "model.multi_modal_projector",
                "visual", "vision_tower", "vision_model", "multi_modal_projector", "lm_head"]
VISION_MODULES = SKIP_MODULES  # old name, kept for importers
MODES = ("4bit", "8bit")


def require_bnb(what: str = "quantization") -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"{what}: bitsandbytes is not installed (pip install 'domainvlm[quant]')") from None


def bnb_config(mode: str, model_type: str | None = None, compute_dtype=None):
    """BitsAndBytesConfig for '4bit' (NF4, double quant: QLoRA) or '8bit' (LLM.int8)."""
    import torch

    if mode not in MODES:
        raise UserError(f"quantization: unknown mode {mode!r} (use 4bit or 8bit)")
    require_bnb()
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        dt = compute_dtype or torch.bfloat16
        # quant_storage = compute dtype keeps the packed weights FSDP-shardable alongside bf16 parameters
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dt, bnb_4bit_quant_storage=dt,
                                  llm_int8_skip_modules=SKIP_MODULES)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_MODULES)


def quantized_modules(model) -> list[str]:
    """Names of bitsandbytes-quantized linear layers (for checks and tests)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [n for n, m in model.named_modules() if isinstance(m, kinds)]
