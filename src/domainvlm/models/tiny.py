"""Tiny same-architecture models of the supported base families, built from configs (no hub, no download).

``build_tiny("qwen2_vl" | "qwen2_5_vl" | "llava", out_dir)`` writes a complete local Hugging Face folder -
config, random safetensors weights, a locally trained tokenizer, a torchvision-free image processor and a
chat template - that the common loader and plain ``from_pretrained`` read like the real 7B bases. Tests use
them to exercise tuning, QLoRA and export per family; ``arch_overrides`` scales one up (the 7B benchmark).
"""

from __future__ import annotations

import math
from pathlib import Path

from .compact import CHAT_TEMPLATE, SPECIALS, train_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava")

# LLaVA-1.5 style template; the processor expands each '<image>' into the vision tower's patch tokens.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% else %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

_CORPUS = [
    "The chest radiograph shows clear lungs without consolidation, effusion or pneumothorax.",
    "Heart size is normal. There is a small left pleural effusion with basal atelectasis.",
    "Wafer map shows an edge-ring defect pattern with a scratch across the center.",
    "Describe the findings in this image. What defect pattern is visible? Answer briefly.",
    "no finding, cardiomegaly, edema, pneumonia, center, donut, edge-loc, local, random, near-full",
    "胸片显示双肺清晰，心影大小正常。晶圆图显示边缘环形缺陷。",
    "0 1 2 3 4 5 6 7 8 9 yes no normal abnormal left right upper lower",
]


def _text_config(hidden: int, layers: int, vocab: int, ids: dict, **kw) -> dict:
    heads = kw.pop("heads", 4)
    cfg = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=kw.pop("intermediate", hidden * 3),
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kw.pop("kv_heads", 2),
               max_position_embeddings=kw.pop("max_position", 2048), tie_word_embeddings=kw.pop("tie", True),
               # ~1/sqrt(hidden): 0.02 leaves a tiny random model nearly inert under LoRA (see compact.py).
               initializer_range=kw.pop("initializer_range", 1 / math.sqrt(hidden)), **ids)
    cfg.update(kw)
    return cfg


def _qwen_config(family: str, tok, a: dict):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    hidden, heads = a.get("hidden", 64), a.get("heads", 4)
    half = hidden // heads // 2  # mrope splits the rotary half-dim over (temporal, height, width)
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text = _text_config(hidden, a.get("layers", 2), a.get("vocab_size", len(tok)),
                        dict(bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
                        heads=heads, kv_heads=a.get("kv_heads", 2), intermediate=a.get("intermediate", hidden * 3),
                        tie=a.get("tie", True), initializer_range=a.get("initializer_range", 1 / math.sqrt(hidden)),
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope})
    vdim, vdepth = a.get("vision_dim", 32), a.get("vision_depth", 2)
    vision = dict(depth=vdepth, num_heads=a.get("vision_heads", 2), patch_size=a.get("patch_size", 4),
                  spatial_merge_size=2, temporal_patch_size=2,
                  initializer_range=a.get("vision_initializer_range", 1 / math.sqrt(vdim)))
    if family == "qwen2_vl":
        vision.update(embed_dim=vdim, hidden_size=hidden, mlp_ratio=a.get("vision_mlp_ratio", 4))
        cls = Qwen2VLConfig
    else:  # Qwen2.5-VL: gated-MLP vision blocks, windowed attention with some full-attention blocks
        vision.update(hidden_size=vdim, out_hidden_size=hidden, intermediate_size=a.get("vision_intermediate", vdim * 2),
                      window_size=a.get("window_size", 2 * a.get("patch_size", 4) * 2),
                      fullatt_block_indexes=a.get("fullatt_block_indexes", [vdepth - 1]))
        cls = Qwen2_5_VLConfig
    return cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
               video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
               vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=text["tie_word_embeddings"],
               eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def _qwen_processor(tok, image_size: int, patch: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .processor import ImageOnlyQwen2VLProcessor

    tok.chat_template = CHAT_TEMPLATE
    px = image_size * image_size
    ip = Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, patch_size=patch, merge_size=2,
                                  temporal_patch_size=2)
    return ImageOnlyQwen2VLProcessor(image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE)


def _llava_tokenizer(corpus, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab, special_tokens=LLAVA_SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
                                  model_max_length=2048)
    tok.chat_template = LLAVA_TEMPLATE
    return tok


def _llava(tok, a: dict):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIALS}
    hidden, image_size, patch = a.get("hidden", 64), a.get("image_size", 32), a.get("patch_size", 8)
    vdim = a.get("vision_dim", 32)
    text = LlamaConfig(**_text_config(hidden, a.get("layers", 2), a.get("vocab_size", len(tok)),
                                      dict(bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                                           pad_token_id=ids["<pad>"]),
                                      heads=a.get("heads", 4), kv_heads=a.get("kv_heads", 2),
                                      intermediate=a.get("intermediate", hidden * 3), tie=a.get("tie", False)))
    vision = CLIPVisionConfig(hidden_size=vdim, intermediate_size=vdim * 2, num_hidden_layers=a.get("vision_depth", 2),
                              num_attention_heads=a.get("vision_heads", 2), image_size=image_size, patch_size=patch,
                              projection_dim=vdim, initializer_factor=a.get("vision_initializer_factor", 1.0))
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=ids["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=text.tie_word_embeddings,
                         pad_token_id=ids["<pad>"])
    # The PIL image processor: the default (fast) CLIP processor needs torchvision.
    ip = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          chat_template=LLAVA_TEMPLATE, num_additional_image_tokens=1)
    return config, proc


def config_and_processor(family: str, corpus=None, **arch):
    """(config, processor) for ``family`` without building weights (the GPU benchmark instantiates on-device)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r} (one of {', '.join(FAMILIES)})")
    a = dict(arch)
    corpus = list(corpus or _CORPUS * 4)
    if family == "llava":
        tok = _llava_tokenizer(corpus, a.pop("tokenizer_vocab", 400))
        return _llava(tok, a)
    tok = train_tokenizer(corpus, a.pop("tokenizer_vocab", 400))
    return _qwen_config(family, tok, a), _qwen_processor(tok, a.get("image_size", 32), a.get("patch_size", 4))


def model_class(family: str):
    import transformers

    return {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration, "llava": transformers.LlavaForConditionalGeneration,
            "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration}[family]


def build_tiny(family: str, out_dir: str | Path, seed: int = 0, corpus=None, save: bool = True, **arch):
    """Write a tiny ``family`` model folder to ``out_dir``; returns (model, processor).

    arch: hidden, layers, heads, kv_heads, intermediate, vocab_size, tie, vision_dim, vision_depth, vision_heads,
    patch_size, image_size, tokenizer_vocab, ... (see the builders above). ``save=False`` writes nothing.
    """
    import torch

    config, proc = config_and_processor(family, corpus, **arch)
    torch.manual_seed(seed)
    model = model_class(family)(config)
    tok = proc.tokenizer
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id if family == "llava" else None
    if save:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        proc.save_pretrained(out)
        from ..io import readable

        readable(out)  # save_pretrained's safetensors file is 0600 (written through its own temporary file)
    return model, proc
