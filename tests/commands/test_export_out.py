"""`domainvlm export --out` may not be, or hold, its own adapter or base: with --force the merged folder was
swapped in over it, deleting the input (``--out .`` replaced the working folder). A file there was a
NotADirectoryError traceback. All are refused before any model loads."""

from __future__ import annotations

import json

import pytest

from domainvlm.cli import main


@pytest.fixture
def folders(tmp_path, monkeypatch):
    from domainvlm.models import export

    monkeypatch.setattr(export, "export_merged", lambda *a, **k: pytest.fail("export ran past the --out check"))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "runs" / "adapter").mkdir(parents=True)
    (tmp_path / "runs" / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "base")}))
    (tmp_path / "a.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("out, says", [
    ("runs/adapter", "--out runs/adapter: is the adapter folder runs/adapter; write the merged model elsewhere"),
    (".", "--out .: holds the adapter folder runs/adapter;"),
    ("runs", "--out runs: holds the adapter folder runs/adapter;"),
    ("base", "--out base: is the base folder "),
    ("a.txt", "--out a.txt: exists and is not a folder"),
])
def test_out_over_an_input_is_refused(folders, capsys, out, says):
    rc = main(["export", "runs/adapter", "--out", out, "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert (folders / "runs" / "adapter" / "adapter_config.json").exists() and (folders / "base").is_dir()


def test_out_elsewhere_reaches_the_export(folders, monkeypatch, capsys):
    from domainvlm.models import export

    seen = {}
    monkeypatch.setattr(export, "export_merged", lambda a, o, **k: seen.update(out=o) or {"out": o})
    assert main(["export", "runs/adapter", "--out", "merged"]) == 0 and seen == {"out": "merged"}


def test_export_of_a_classify_adapter_keeps_its_data_files(tmp_path, capsys):
    """taxonomy.json, calibration.json and the input check travel with the merged folder, so it answers in the
    same classes, with the same confidence and input check, as the adapter (a real tiny merge, --check)."""
    import torch

    from domainvlm.domains.classify.input_check import FILE as CHECK
    from domainvlm.models.loader import load_model
    from domainvlm.models.tiny import build_tiny
    from domainvlm.taxonomy import Taxonomy, TaxonomyClass, from_model_dir
    from domainvlm.train.config import LoraConfig, TrainConfig
    from domainvlm.train.tuning import apply_tuning

    build_tiny("qwen2_vl", tmp_path / "base")
    model, proc = load_model(tmp_path / "base", device="cpu", dtype="float32")
    peft_model = apply_tuning(model, TrainConfig(mode="lora", lora=LoraConfig(r=4)))
    with torch.no_grad():  # a LoRA that changes the answers, so --check compares something
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    proc.save_pretrained(adapter)
    Taxonomy("steel", [TaxonomyClass("裂纹"), TaxonomyClass("scratch")]).save(adapter)
    (adapter / "calibration.json").write_text(json.dumps({"temperature": 1.5, "threshold": 0.4, "n": 9}))
    (adapter / CHECK).write_bytes(b"not read here, only copied")
    out = tmp_path / "merged"
    assert main(["export", str(adapter), "--out", str(out), "--check"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[0])
    assert res["greedy_check"] == "match" and res["copied"] == ["taxonomy.json", "calibration.json", CHECK]
    for name in res["copied"]:
        assert (out / name).read_bytes() == (adapter / name).read_bytes(), name
    assert from_model_dir(out).names == ["裂纹", "scratch"]
