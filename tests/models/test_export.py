"""`domainvlm export`: merged folders load with plain transformers and generate exactly what the adapter did."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from domainvlm.cli import main
from domainvlm.errors import UserError
from domainvlm.models.export import export_merged, greedy_tokens
from domainvlm.models.loader import load_model, load_processor
from domainvlm.models.tiny import FAMILIES, build_tiny
from domainvlm.train.config import LoraConfig, TrainConfig
from domainvlm.train.tuning import apply_tuning

# One option set per family, so merging covers LM LoRA, vision LoRA and a densely trained projector.
OPTS = {"qwen2_vl": dict(train_projector=True), "qwen2_5_vl": dict(lora=LoraConfig(r=4, vision=True)),
        "llava": dict(lora=LoraConfig(r=4, layers="1"), train_projector=True)}
IMAGES = [Image.new("RGB", (40, 40), (200, 30, 90)), Image.radial_gradient("L").convert("RGB").resize((48, 40))]


def make_adapter(base_dir, family, out):
    """A saved adapter whose weights really matter: LoRA B and the trained copies are randomised."""
    model, proc = load_model(base_dir, device="cpu", dtype="float32")
    peft_model = apply_tuning(model, TrainConfig(mode="lora", **({"lora": LoraConfig(r=4)} | OPTS[family])))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * (0.3 if "lora_B" in n else 0.05))
    peft_model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for f in FAMILIES:
        build_tiny(f, root / f"{f}-base")
        out[f] = (root / f"{f}-base", make_adapter(root / f"{f}-base", f, root / f"{f}-adapter"), root)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_export_matches_unmerged_adapter(setups, family):
    from transformers import AutoModelForImageTextToText

    base, adapter, root = setups[family]
    out = root / f"{family}-merged"
    summary = export_merged(adapter, out, check=True)
    assert summary["greedy_check"] == "match"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "chat_template.jinja"} <= names
    assert not any(n.startswith("adapter_") for n in names) and not list(out.glob("*.bin"))
    unmerged, proc = load_model(adapter, device="cpu", dtype="float32")  # base + adapter through peft
    plain = AutoModelForImageTextToText.from_pretrained(out).eval()  # plain transformers, no peft
    basem, _ = load_model(base, device="cpu", dtype="float32")
    proc2 = load_processor(out)
    differs = False
    for img in IMAGES:
        ref = greedy_tokens(unmerged, proc, image=img)
        assert greedy_tokens(plain, proc2, image=img) == ref
        differs |= greedy_tokens(basem, proc, image=img) != ref
    assert differs, "the adapter changed nothing: the equivalence above would prove nothing"


def test_cli_export_and_quantized_loading_for_inference(setups, capsys):
    pytest.importorskip("bitsandbytes")
    base, adapter, root = setups["qwen2_vl"]
    out = root / "cli-merged"
    assert main(["export", str(adapter), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert main(["export", str(adapter), "--out", str(out)]) == 2  # exists: refuses without --force
    assert "--force" in capsys.readouterr().err
    model, proc = load_model(out, device="cpu", dtype="float32", quantization="8bit")
    assert any(type(m).__name__ == "Linear8bitLt" for m in model.modules())
    assert len(greedy_tokens(model, proc, max_new_tokens=4)) == 4


def test_bad_inputs_give_one_clear_error(setups, tmp_path):
    qbase, qadapter, _ = setups["qwen2_vl"]
    lbase, _, _ = setups["llava"]
    q25, _, _ = setups["qwen2_5_vl"]
    with pytest.raises(UserError, match="adapter was trained on .*qwen2_vl.*not on this base .*llava"):
        export_merged(qadapter, tmp_path / "x", base=lbase)
    with pytest.raises(UserError, match="adapter was trained on"):
        export_merged(qadapter, tmp_path / "x", base=q25)  # same LM shapes, other family: still caught
    with pytest.raises(UserError, match="base model directory .* not found"):
        export_merged(qadapter, tmp_path / "x", base=tmp_path / "no-such-base")
    with pytest.raises(UserError, match="a full model folder, not a LoRA adapter"):
        export_merged(qbase, tmp_path / "x")
    with pytest.raises(UserError, match="no-such-adapter: no such adapter folder"):
        export_merged(tmp_path / "no-such-adapter", tmp_path / "x")
    with pytest.raises(UserError, match="no adapter_config.json"):
        export_merged(tmp_path, tmp_path / "x")  # a folder, but nothing in it to merge
    # an adapter whose recorded base is gone
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in qadapter.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "deleted-base")
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="base_model_name_or_path.*not found"):
        export_merged(moved, tmp_path / "x")
    with pytest.raises(UserError, match="base_model_name_or_path.*not found"):
        load_model(moved, device="cpu")
    # adapter with shapes of another size of the same family, recorded base unknown
    other = tmp_path / "wide"
    build_tiny("qwen2_vl", other, hidden=96)
    cfg["base_model_name_or_path"] = "somewhere/else"
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="adapter for another base"):
        export_merged(moved, tmp_path / "x", base=other)
    with pytest.raises(UserError, match="adapter for another base"):
        export_merged(moved, tmp_path / "x", base=lbase)
