"""A LoRA adapter answers with the processor it was trained with, saved beside it by the trainer: its
min_pixels/max_pixels (from the train config or the base's preprocessor_config.json), loaded from the adapter
folder and carried into the merged export. Both folders name stock transformers classes only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainvlm.inference.engine import Engine
from domainvlm.models.export import export_merged
from domainvlm.models.loader import load_model, load_processor
from domainvlm.models.tiny import build_tiny
from domainvlm.train.config import LoraConfig, TrainConfig
from domainvlm.train.trainer import train

from test_stock_folders import assert_stock_names

X = 64 * 64  # the trained resolution; the tiny base's own is 32 * 32
BIG = Image.new("RGB", (96, 96), (90, 120, 150))  # large enough for either resolution to resize it
MSGS = [{"role": "user", "content": "<image>\nWhat is shown?"}]


def _train(root, base, name, **pixels):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(root / f"{i}.png")
        rows.append({"id": str(i), "images": [f"{i}.png"], "messages": [
            {"role": "user", "content": "<image>\nWhat is shown?"}, {"role": "assistant", "content": f"case {i}"}]})
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(model=str(base), data=str(root / "d.jsonl"), output_dir=str(root / name), mode="lora",
                      lora=LoraConfig(r=4), max_steps=1, batch_size=2, eval_every=0, eval_samples=0, save_every=0,
                      **pixels)
    return Path(train(cfg, progress=False)["model_dir"])


def _size(proc) -> tuple[int, int]:
    return proc.image_processor.size["shortest_edge"], proc.image_processor.size["longest_edge"]


def _saved_size(folder) -> dict:
    return json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))["image_processor"]["size"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(base, adapter trained with min_pixels = max_pixels = X in its train config, root)."""
    root = tmp_path_factory.mktemp("adapter-proc")
    build_tiny("qwen2_vl", root / "base")
    adapter = _train(root, root / "base", "run", min_pixels=X, max_pixels=X)
    return root / "base", adapter, root


def test_adapter_answers_at_the_resolution_it_was_trained_at(trained):
    base, adapter, _ = trained
    assert _saved_size(adapter) == {"shortest_edge": X, "longest_edge": X}
    assert_stock_names(adapter)
    _, proc = load_model(adapter, device="cpu")
    assert _size(proc) == (X, X)  # before: (1024, 1024), the base's
    trained_at = Engine(base, device="cpu", min_pixels=X, max_pixels=X).prompt_tokens(MSGS, [BIG])
    assert Engine(adapter, device="cpu").prompt_tokens(MSGS, [BIG]) == trained_at
    assert Engine(base, device="cpu").prompt_tokens(MSGS, [BIG]) < trained_at  # the base alone answers smaller


def test_explicit_pixels_still_override_the_adapters(trained):
    _, adapter, _ = trained
    assert _size(load_processor(adapter, min_pixels=1024, max_pixels=2048)) == (1024, 2048)


def test_merged_export_saves_and_reloads_the_trained_processor(trained):
    from transformers import Qwen2VLImageProcessorPil

    _, adapter, root = trained
    out = root / "merged"
    export_merged(adapter, out)
    assert _saved_size(out) == {"shortest_edge": X, "longest_edge": X}  # before: the base's 1024
    assert_stock_names(out)
    assert _size(load_processor(out)) == (X, X)
    ip = Qwen2VLImageProcessorPil.from_pretrained(out)  # plain transformers reads the same resolution
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (X, X)
    assert Engine(out, device="cpu").prompt_tokens(MSGS, [BIG]) == Engine(adapter, device="cpu").prompt_tokens(
        MSGS, [BIG])


def test_resolution_from_the_base_preprocessor_config_stays_with_the_adapter(tmp_path):
    """A hub-layout base (preprocessor_config.json with min_pixels/max_pixels, no processor_config.json): the
    adapter keeps the resolution it was trained at when the base's file changes later (re-downloaded, edited);
    a bare peft folder (no processor beside it) follows its base."""
    base = tmp_path / "base"
    build_tiny("qwen2_vl", base)
    pc = json.loads((base / "processor_config.json").read_text(encoding="utf-8"))
    (base / "processor_config.json").unlink()
    ip = {k: v for k, v in pc["image_processor"].items() if k != "size"}
    hub = {**ip, "min_pixels": X, "max_pixels": X, "processor_class": "Qwen2VLProcessor"}
    (base / "preprocessor_config.json").write_text(json.dumps(hub), encoding="utf-8")
    adapter = _train(tmp_path, base, "run")  # no pixels in the train config: the base's file sets them
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, bare / name)
    assert _size(load_processor(bare)) == (X, X)  # the base's, while it says X
    (base / "preprocessor_config.json").write_text(json.dumps({**hub, "min_pixels": 1024, "max_pixels": 1024}),
                                                   encoding="utf-8")
    assert _size(load_processor(bare)) == (1024, 1024)
    _, proc = load_model(adapter, device="cpu")
    assert _size(proc) == (X, X)
    export_merged(adapter, tmp_path / "merged")
    assert _size(load_processor(tmp_path / "merged")) == (X, X)
