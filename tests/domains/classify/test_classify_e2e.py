"""Classify end to end on a generated ImageFolder: data build -> train (generic trainer, augment=domain) ->
eval --data FOLDER; the recipe command on CPU; and the committed NEU expert on a subset of NEU val."""

import json
from pathlib import Path

import pytest
from classify_helpers import image_folder, taxonomy_file

from domainvlm.cli import main

ROOT = Path(__file__).resolve().parents[3]  # the checkout: tests/domains/classify/ is three down
NEU_MODEL = ROOT / "models" / "neu-steel-expert"
TINY_COMPACT = ["compact.image_size=32", "compact.patch_size=4", "compact.vision_dim=32", "compact.vision_depth=1",
                "compact.vision_heads=2", "compact.hidden=64", "compact.layers=1", "compact.heads=2",
                "compact.kv_heads=1", "compact.intermediate=128", "compact.vocab_size=600"]


@pytest.mark.slow
def test_build_train_eval_on_an_image_folder(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=4)
    tax = taxonomy_file(tmp_path / "tax.yaml")
    data = tmp_path / "data"
    assert main(["data", "build", "--source", str(root), "--taxonomy", str(tax), "--out", str(data)]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["taxonomy.json", "train.jsonl", "val.jsonl"]
    from domainvlm.domains.classify import collection

    collection._TAXONOMIES.clear()  # as in a fresh process: train reads data/taxonomy.json
    run = tmp_path / "run"
    assert main(["train", f"data={data / 'train.jsonl'}", f"val_data={data / 'val.jsonl'}", f"output_dir={run}",
                 "max_steps=4", "batch_size=4", "eval_every=0", "eval_samples=4", "augment=domain",
                 "--no-progress", *TINY_COMPACT]) == 0
    model = run / "model"
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["domainvlm"]["answer_head"] == "classify" and cfg["domainvlm"]["taxonomy"] == "toy"
    assert json.loads((model / "taxonomy.json").read_text())["classes"][0]["zh"] == "点"
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(model), "--data", str(root), "--split", "val", "--out", str(out),
                 "--predictions", str(tmp_path / "p.jsonl"), "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["task"] == "classify" and m["n"] == 8 and m["unparsed"] == 0  # the head always answers a class
    assert set(m["per_class"]) == {"dots", "stripes"} and Path(m["confusion_png"]).stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(r["answer"].split("\n")[0] in ("Class: dots", "Class: stripes") for r in rows)


@pytest.mark.slow
def test_recipe_command_trains_and_saves_a_head_model(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=4, size=32)
    run = tmp_path / "rec"
    assert main(["train-classify", f"data={root}", f"output_dir={run}", "max_steps=3", "batch_size=4",
                 "warmup_steps=1", "teacher_steps=2", "teacher_batch=4", "eval_at=[1.0]", "log_every=1",
                 *TINY_COMPACT]) == 0
    sel = json.loads((run / "val_selection.json").read_text())
    assert sel["summary"]["steps"] == 3 and 0.0 <= sel["summary"]["best"]["val_accuracy"] <= 1.0
    assert any("kd" in h for h in sel["history"] if "step" in h)  # the teacher was distilled
    assert (run / "training_curves.png").is_file() and any((run / "tb").iterdir())  # curves PNG, TensorBoard
    assert (run / "model" / "taxonomy.json").is_file()
    from domainvlm.domains.classify.input_check import load

    chk = load(run / "model")  # the out-of-domain check, fitted on train with its threshold on val
    assert chk.info["n_train"] == 8 and chk.info["n_val"] == 8 and chk.info["val_rejected"] == 0
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(run / "model"), "--data", str(root), "--split", "val", "--out", str(out),
                 "--quiet"]) == 0
    # the recipe selects on exactly what eval measures
    assert json.loads(out.read_text())["exact_match"] == pytest.approx(sel["summary"]["best"]["val_accuracy"])


def test_recipe_config_errors_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "rec"
    assert main(["train-classify", f"data={tmp_path / 'missing'}", f"output_dir={run}"]) == 2
    assert "data not found" in capsys.readouterr().err and not run.exists()
    assert main(["train-classify", f"data={tmp_path}", f"output_dir={run}", "crop_scale=[0.9,0.5]"]) == 2
    assert "crop_scale" in capsys.readouterr().err and not run.exists()


@pytest.mark.slow
def test_committed_neu_expert_on_a_val_subset(shared_data, tmp_path):
    """10 images per class of NEU val (the model card gives the full-val numbers)."""
    if not (NEU_MODEL / "model.safetensors").is_file():
        pytest.skip("models/neu-steel-expert not present")
    val = shared_data / "neu-steel" / "val"
    sub = tmp_path / "neu-sub" / "val"
    for cls in sorted(p.name for p in val.iterdir() if p.is_dir()):
        (sub / cls).mkdir(parents=True)
        for f in sorted((val / cls).glob("*.jpg"))[:10]:
            (sub / cls / f.name).symlink_to(f)
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(NEU_MODEL), "--data", str(sub.parent), "--split", "val", "--out", str(out),
                 "--quiet", "--threads", "2"]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 60 and m["unparsed"] == 0
    assert m["exact_match"] >= 58 / 60, m["confusion"]


@pytest.mark.slow
def test_lora_on_a_local_base(tmp_path):
    """LoRA on a local base: same data, the adapter folder carries taxonomy.json; it decodes freely (no head)."""
    from domainvlm.models.tiny import build_tiny

    root = image_folder(tmp_path / "toy", per_class=2)
    data = tmp_path / "data"
    assert main(["data", "build", "--source", str(root), "--out", str(data), "--langs", "en"]) == 0
    build_tiny("qwen2_vl", tmp_path / "base", image_size=32)
    run = tmp_path / "lora"
    assert main(["train", f"data={data / 'train.jsonl'}", f"val_data={data / 'val.jsonl'}", f"output_dir={run}",
                 f"model={tmp_path / 'base'}", "mode=lora", "max_steps=2", "batch_size=2", "eval_every=0",
                 "eval_samples=2", "eval_max_new_tokens=6", "augment=domain", "--no-progress"]) == 0
    assert (run / "model" / "adapter_config.json").is_file()
    assert json.loads((run / "model" / "taxonomy.json").read_text())["name"] == "toy"
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(run / "model"), "--data", str(root), "--split", "val", "--out", str(out),
                 "--max-new-tokens", "6", "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["task"] == "classify" and m["n"] == 4  # an untrained adapter's answers need not parse
