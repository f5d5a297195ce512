"""Folders we ship or save are plain Qwen2-VL folders: they name only stock transformers classes, and stock
classes alone (model + tokenizer + image processor, no domainvlm code) give the same greedy answer as the
domainvlm engine. (AutoProcessor itself needs torchvision for Qwen2-VL's video processor, which this
environment does not have, so the stock image-processor and tokenizer classes are used directly.)"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from domainvlm.models.loader import BUNDLED

EXAMPLES = BUNDLED.parent / "examples"
QUESTIONS = ["What defect pattern does this wafer map show?", "这张晶圆图显示了什么缺陷模式？"]


def stock_greedy(path, question: str, image, max_new_tokens: int, min_new_tokens: int = 0):
    """Greedy tokens through stock transformers classes only, the way Qwen2VLProcessor builds its inputs."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(path)
    ip = Qwen2VLImageProcessorPil.from_pretrained(path)
    model = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    px = ip(images=[image], return_tensors="pt")
    n_img = int(px["image_grid_thw"][0].prod()) // ip.merge_size ** 2
    text = text.replace("<|image_pad|>", "<|image_pad|>" * n_img)
    enc = tok(text, return_tensors="pt")
    mm = (enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).long()
    with torch.inference_mode():
        out = model.generate(**enc, **px, mm_token_type_ids=mm, max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:]
    stock_greedy.prompt_len = enc["input_ids"].shape[1]
    return new.tolist(), tok.decode(new, skip_special_tokens=True).strip()


def assert_stock_names(folder):
    proc = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    assert proc["processor_class"] == "Qwen2VLProcessor"
    assert proc["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    # AutoProcessor refuses a Qwen2-VL folder without a video processor config, torchvision or not
    assert proc["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert proc["video_processor"]["patch_size"] == proc["image_processor"]["patch_size"]
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok.get("processor_class", "Qwen2VLProcessor") == "Qwen2VLProcessor"
    import transformers

    for f in folder.glob("*.json"):  # nothing names a class only domainvlm defines
        assert "ImageOnly" not in f.read_text(encoding="utf-8"), f
    assert hasattr(transformers, proc["processor_class"]) and hasattr(transformers, "Qwen2VLImageProcessor")


def test_bundled_expert_loads_with_stock_classes_and_answers_as_the_engine():
    from domainvlm.inference.engine import Engine, Sampling

    assert_stock_names(BUNDLED)
    engine = Engine(None, device="cpu")
    # the head's own "Confidence: N%." line is computed, not generated: compare the model's text without it
    engine.answer_head.confidence = False
    for name, q in [("wafer_scratch.png", QUESTIONS[0]), ("wafer_center.png", QUESTIONS[1])]:
        img = Image.open(EXAMPLES / name).convert("RGB")
        ids, text = stock_greedy(BUNDLED, q, img, max_new_tokens=120)
        msgs = [{"role": "user", "content": f"<image>\n{q}"}]
        ours = engine.generate([(msgs, [img])], Sampling(max_new_tokens=120))
        assert text == ours[0] and text.splitlines()[0].startswith(("Diagnosis:", "诊断："))
        assert ids[-1] == engine.processor.tokenizer.eos_token_id  # stopped on its own, not cut at the limit
        # the API's usage for the head's answer counts exactly the tokens stock greedy decoding produced
        assert engine.count_usage(ours[0], msgs, [img]) == (stock_greedy.prompt_len, len(ids))


def test_exported_tiny_model_names_stock_classes_and_matches_engine(tmp_path):
    from domainvlm.inference.engine import Engine, Sampling
    from domainvlm.models.export import export_merged, greedy_tokens
    from domainvlm.models.loader import load_model
    from domainvlm.models.tiny import build_tiny
    from domainvlm.train.config import LoraConfig, TrainConfig
    from domainvlm.train.tuning import apply_tuning

    base = tmp_path / "base"
    build_tiny("qwen2_vl", base)
    assert_stock_names(base)
    model, proc = load_model(base, device="cpu", dtype="float32")
    peft_model = apply_tuning(model, TrainConfig(mode="lora", lora=LoraConfig(r=4)))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    proc.save_pretrained(tmp_path / "adapter")
    assert_stock_names(tmp_path / "adapter")
    out = tmp_path / "merged"
    export_merged(tmp_path / "adapter", out)
    assert_stock_names(out)
    img = Image.new("RGB", (40, 40), (200, 30, 90))
    q = "Describe the findings."
    ids, _ = stock_greedy(out, q, img, max_new_tokens=12, min_new_tokens=12)
    engine = Engine(out, device="cpu")
    assert greedy_tokens(engine.model, engine.processor, max_new_tokens=12, image=img) == ids
    got = engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])],
                          Sampling(max_new_tokens=12))[0]
    assert stock_greedy(out, q, img, max_new_tokens=12)[1] == got  # free run: same stop, same text


@pytest.mark.parametrize("lo,hi", [(64 * 64, 64 * 64), (None, 32 * 32)])
def test_min_max_pixels_set_the_image_resolution(tmp_path, lo, hi):
    from domainvlm.models.loader import load_processor
    from domainvlm.models.tiny import build_tiny

    build_tiny("qwen2_vl", tmp_path / "m")
    proc = load_processor(tmp_path / "m", min_pixels=lo, max_pixels=hi)
    grid = proc.image_processor(images=[Image.new("RGB", (96, 96))], return_tensors="pt")["image_grid_thw"][0]
    patch = proc.image_processor.patch_size
    assert int(grid[1] * grid[2]) * patch * patch <= hi
    if lo:
        assert int(grid[1] * grid[2]) * patch * patch >= lo


def test_auto_processor_finds_every_sub_processor_config():
    """Without torchvision here, stock AutoProcessor must get as far as the torchvision requirement itself: the
    folder's configs are complete (before the fix it stopped at 'Can't load video processor')."""
    import importlib.util

    from transformers import AutoProcessor

    if importlib.util.find_spec("torchvision") is not None:
        proc = AutoProcessor.from_pretrained(BUNDLED)
        assert type(proc).__name__ == "Qwen2VLProcessor"
        return
    with pytest.raises(ImportError, match="requires the Torchvision library"):
        AutoProcessor.from_pretrained(BUNDLED)
