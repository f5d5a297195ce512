"""Build the compact domain VLM: a small Qwen2-VL-architecture model with a locally trained tokenizer.

Everything is a standard Hugging Face folder (config.json, model.safetensors, tokenizer.json, processor
config, chat template), so the common loader - and plain transformers - reads it like any Qwen2-VL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL's template without the default system prompt (it would cost ~10 tokens per call for nothing).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' or 'image' in c or 'image_url' in c %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class CompactConfig:
    image_size: int = 56          # model input side; 52x52 wafer maps pad to 56 (one pixel per die)
    patch_size: int = 4           # vision patch side in pixels
    merge_size: int = 2           # 2x2 patch merge -> (56/4/2)^2 = 49 image tokens
    vision_dim: int = 128         # vision tower width
    vision_depth: int = 4         # vision tower layers
    vision_heads: int = 4         # vision attention heads
    hidden: int = 256             # language model width
    layers: int = 4               # language model layers
    heads: int = 4                # attention heads
    kv_heads: int = 2             # key/value heads (grouped-query attention)
    intermediate: int = 768       # MLP width
    vocab_size: int = 4096        # BPE vocabulary learnt from the training text (at most)
    max_position: int = 2048      # longest sequence (rotary positions)
    resample: str = "nearest"     # image resize filter: nearest keeps each wafer die a crisp block; bicubic for
    #                               photographs and radiographs


RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}  # PIL filter ids


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE (any UTF-8 text encodes, zh included) trained on the domain corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=2048)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_compact(out_dir: str | Path, corpus: Iterable[str], cfg: CompactConfig | None = None, seed: int = 0):
    """Create an untrained compact model folder at ``out_dir``; returns (model, processor)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .processor import ImageOnlyQwen2VLProcessor

    cfg = cfg or CompactConfig()
    if cfg.resample not in RESAMPLE:
        from ..errors import UserError

        raise UserError(f"compact.resample: {cfg.resample!r} is not one of {', '.join(RESAMPLE)}")
    tok = train_tokenizer(corpus, cfg.vocab_size)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    head_dim = cfg.hidden // cfg.heads
    half = head_dim // 2  # mrope splits the rotary half-dim over (temporal, height, width)
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
            max_position_embeddings=cfg.max_position, tie_word_embeddings=True,
            # ~1/sqrt(hidden): the 0.02 default makes a small random model learn very slowly.
            initializer_range=1 / math.sqrt(cfg.hidden),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(
            depth=cfg.vision_depth, embed_dim=cfg.vision_dim, hidden_size=cfg.hidden, num_heads=cfg.vision_heads,
            patch_size=cfg.patch_size, spatial_merge_size=cfg.merge_size, temporal_patch_size=2,
            initializer_range=1 / math.sqrt(cfg.vision_dim)),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    config.domainvlm = asdict(cfg)  # recorded in config.json for provenance
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = None
    px = cfg.image_size * cfg.image_size
    ip = Qwen2VLImageProcessorPil(
        min_pixels=px, max_pixels=px, patch_size=cfg.patch_size, merge_size=cfg.merge_size,
        temporal_patch_size=2, resample=RESAMPLE[cfg.resample],
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = ImageOnlyQwen2VLProcessor(image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    from ..io import readable

    readable(out)  # save_pretrained's safetensors file is 0600 (written through its own temporary file)
    return model, proc
