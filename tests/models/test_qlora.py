"""QLoRA through bitsandbytes (CPU backend here): language model quantized only, a training step runs,
and the adapter merges back into the full-precision base."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("bitsandbytes")

from domainvlm.errors import UserError  # noqa: E402
from domainvlm.models.loader import load_model  # noqa: E402
from domainvlm.models.quant import bnb_config, quantized_modules  # noqa: E402
from domainvlm.models.tiny import FAMILIES, build_tiny  # noqa: E402
from domainvlm.train.tuning import part_of  # noqa: E402


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora-bases")
    for f in FAMILIES:
        build_tiny(f, root / f)
    return {f: root / f for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_only_the_language_model_is_quantized(bases, family, mode):
    model, _ = load_model(bases[family], device="cpu", dtype="float32", quantization=mode)
    q = quantized_modules(model)
    lm_linears = [n for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and part_of(n) == "lm" and not n.endswith("lm_head")]
    assert q and sorted(q) == sorted(lm_linears)  # every LM linear, nothing of vision/projector/lm_head


def write_records(root, n=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(root / f"img{i}.png")
        ans = " ".join(["The heart size is normal."] * (1 + i % 3))
        rows.append({"id": str(i), "images": [f"img{i}.png"],
                     "messages": [{"role": "user", "content": "<image>\nDescribe the findings."},
                                  {"role": "assistant", "content": ans}]})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data.jsonl"


def test_qlora_trains_a_step_and_merges_into_the_full_precision_base(bases, tmp_path):
    from safetensors import safe_open
    from transformers import Qwen2VLForConditionalGeneration

    from domainvlm.models.export import export_merged
    from domainvlm.train.config import TrainConfig
    from domainvlm.train.trainer import train

    cfg = TrainConfig(data=str(write_records(tmp_path)), model=str(bases["qwen2_vl"]), mode="lora",
                      quantization="4bit", output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4,
                      eval_samples=0, log_every=1, packing=True, answer_logits=True, gradient_checkpointing=1.0)
    res = train(cfg, progress=False)
    assert res["steps"] == 2 and np.isfinite(res["last"]["val_loss"])
    adapter = tmp_path / "run" / "model"
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # only the adapter is saved, not 4-bit base weights
    out = export_merged(adapter, tmp_path / "merged", check=True)
    assert out["greedy_check"] == "match"
    cfg_json = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in cfg_json  # a plain full-precision model: loads anywhere
    Qwen2VLForConditionalGeneration.from_pretrained(tmp_path / "merged")


def test_qlora_counts_the_4bit_weights_unpacked(bases):
    """The trainable/total counts printed and logged: a 4-bit base holds as many weights as the plain one (its
    packed Params4bit tensors hold two per element), so QLoRA counts what LoRA on the plain base counts."""
    from domainvlm.train.config import TrainConfig
    from domainvlm.train.tuning import apply_tuning, count_trainable

    cfg = TrainConfig(mode="lora")
    plain = apply_tuning(load_model(bases["qwen2_vl"], device="cpu", dtype="float32")[0], cfg)
    cfg.quantization = "4bit"
    quant, _ = load_model(bases["qwen2_vl"], device="cpu", dtype="float32", quantization="4bit")
    assert any(type(p).__name__ == "Params4bit" for p in quant.parameters())
    assert count_trainable(apply_tuning(quant, cfg)) == count_trainable(plain)


def test_quantization_mistakes_are_clear_errors():
    with pytest.raises(UserError, match="unknown mode '3bit'"):
        bnb_config("3bit")
