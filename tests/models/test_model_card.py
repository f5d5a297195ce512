"""Every model we ship, train or export has an HF card with YAML front matter; metrics come from our eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from domainvlm.models.card import read_front_matter
from domainvlm.models.loader import BUNDLED
from domainvlm.train.config import LoraConfig, TrainConfig
from domainvlm.train.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))  # the trainer tests' data helper
from test_train_resume import _data  # noqa: E402


def _values(fm, dataset):
    res = next(r for r in fm["model-index"][0]["results"] if r["dataset"]["name"] == dataset)
    return {m["name"]: m["value"] for m in res["metrics"]}


def test_bundled_card_has_front_matter_with_measured_metrics():
    fm = read_front_matter(BUNDLED / "README.md")
    assert fm["license"] == "apache-2.0" and fm["pipeline_tag"] == "image-text-to-text"
    assert fm["datasets"] == ["MixedWM38", "WM-811K"] and "exact_match" in fm["metrics"]
    for f, name in (("val_metrics_mixedwm38.json", "MixedWM38 val"), ("val_metrics_wm811k.json", "WM-811K val")):
        m = json.loads((BUNDLED / f).read_text())
        got = _values(fm, name)
        assert got["exact match"] == round(m["exact_match"], 4) and got["macro F1"] == round(m["macro_f1"], 4)
    text = (BUNDLED / "README.md").read_text()
    assert "## Model" in text and text.count("\n---\n") >= 1  # the card's own text is kept below it


def test_trained_and_exported_models_get_cards(tmp_path, tiny_model_dir):
    from domainvlm.models.export import export_merged

    data = _data(tmp_path, n=8)
    out = tmp_path / "run"
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(out), max_steps=2, batch_size=4,
                      mode="lora", lora=LoraConfig(r=4), eval_every=0, eval_samples=0, save_every=0,
                      val_fraction=0.25)
    res = train(cfg, progress=False)
    fm = read_front_matter(out / "model" / "README.md")
    assert fm["base_model"] == tiny_model_dir.name and fm["library_name"] == "peft"
    assert fm["pipeline_tag"] == "image-text-to-text" and fm["license"] == "other"  # the tiny base has no card
    assert fm["datasets"] == ["d"] and "lora" in fm["tags"]
    best = res["best"]
    assert best is not None and _values(fm, "d val")["validation loss"] == round(best["val_loss"], 4)
    merged = tmp_path / "merged"
    export_merged(out / "model", merged)
    mfm = read_front_matter(merged / "README.md")
    assert mfm["base_model"] == tiny_model_dir.name and mfm["library_name"] == "transformers"
    assert mfm["model-index"] == fm["model-index"] and "merged" in mfm["tags"]
    assert "Merged from the LoRA adapter" in (merged / "README.md").read_text()
