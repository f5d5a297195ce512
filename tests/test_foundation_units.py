"""Record validation, config loading, chat encoding (answer-only loss) and the common loader."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from domainvlm.config import load_config
from domainvlm.data.record import Record, read_jsonl
from domainvlm.errors import UserError
from domainvlm.models.chat_format import IGNORE, collate, encode_prompt, encode_train
from domainvlm.models.loader import inspect_dir, load_model
from domainvlm.train.config import TrainConfig


def _rec(**kw):
    d = {"id": "a", "images": ["x.png"], "messages": [{"role": "user", "content": "<image>\nq"},
                                                       {"role": "assistant", "content": "a"}]}
    d.update(kw)
    return d


def test_record_errors_name_line_and_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(_rec()) + "\n" + json.dumps(_rec(images=[])) + "\n")
    with pytest.raises(UserError, match=r"d.jsonl:2: field 'images'"):
        list(read_jsonl(p))
    p.write_text(json.dumps(_rec()) + "\n{not json\n")
    with pytest.raises(UserError, match=r"d.jsonl:2: malformed JSON"):
        list(read_jsonl(p))
    bad_role = _rec(messages=[{"role": "bot", "content": "<image>"}, {"role": "assistant", "content": "x"}])
    with pytest.raises(UserError, match=r"messages\[0\].role"):
        Record.from_dict(bad_role, "f", 1)
    with pytest.raises(UserError, match="last turn"):
        Record.from_dict(_rec(messages=[{"role": "user", "content": "<image>"}]), "f", 1)


def test_config_yaml_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("data: a.jsonl\nlr: 0.01\nlora:\n  r: 4\n")
    cfg = load_config(TrainConfig, y, ["lora.alpha=8", "max_steps=7", "compact.layers=2", "lora.target_modules=[q_proj]"])
    assert (cfg.data, cfg.lr, cfg.lora.r, cfg.lora.alpha, cfg.max_steps) == ("a.jsonl", 0.01, 4, 8, 7)
    assert cfg.compact.layers == 2 and cfg.lora.target_modules == ["q_proj"]
    with pytest.raises(UserError, match="unknown field"):
        load_config(TrainConfig, None, ["nope=1"])
    with pytest.raises(UserError, match="'max_steps' expects int"):
        load_config(TrainConfig, None, ["max_steps=abc"])
    with pytest.raises(UserError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_answer_only_labels_multi_turn(tiny_model_dir):
    _, proc = load_model(tiny_model_dir, device="cpu")
    img = Image.new("RGB", (32, 32), (10, 20, 30))
    msgs = [{"role": "user", "content": "<image>\nDiagnose this wafer map."},
            {"role": "assistant", "content": "Diagnosis: Center"},
            {"role": "user", "content": "What are the likely causes?"},
            {"role": "assistant", "content": "Check CMP."}]
    enc = encode_train(proc, msgs, [img])
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    tok = proc.tokenizer
    supervised = tok.decode(ids[labels != IGNORE])
    assert "Diagnosis: Center" in supervised and "Check CMP." in supervised
    assert "Diagnose this" not in supervised and "likely causes" not in supervised
    assert supervised.count("<|im_end|>") == 2  # the model learns to stop after each answer
    assert (ids == proc.image_token_id).sum() > 0 and (labels[ids == proc.image_token_id] == IGNORE).all()
    p = encode_prompt(proc, msgs[:1], [img])
    batch = collate([p, encode_prompt(proc, [{"role": "user", "content": "hi"}], [])], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][1, 0] == 0  # left padded
    assert batch["image_grid_thw"].shape[0] == 1


def test_loader_errors(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="model directory not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        inspect_dir(tmp_path / "empty")
    assert inspect_dir(tiny_model_dir)["model_type"] == "qwen2_vl"
    model, _ = load_model(tiny_model_dir, device="cpu")
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_compact_resample_is_a_config_field(tmp_path):
    """Wafer maps resize nearest (crisp dies); radiographs ask for bicubic; the choice survives save/load."""
    from conftest import TINY

    from domainvlm.errors import UserError
    from domainvlm.models.compact import CompactConfig, build_compact
    from domainvlm.models.loader import load_processor

    corpus = ["Diagnosis: Center. 诊断：中心。"] * 20
    for name, pil in (("nearest", 0), ("bicubic", 3)):
        build_compact(tmp_path / name, corpus, CompactConfig(**TINY, resample=name))
        assert load_processor(tmp_path / name).image_processor.resample == pil
    with pytest.raises(UserError, match="compact.resample: 'cubic'"):
        build_compact(tmp_path / "bad", corpus, CompactConfig(**TINY, resample="cubic"))


def test_built_model_folders_are_readable_like_plain_writes(tmp_path):
    """build_compact / build_tiny save through save_pretrained, whose model.safetensors came out 0600."""
    import os
    import stat

    from conftest import TINY

    from domainvlm.models.compact import CompactConfig, build_compact
    from domainvlm.models.tiny import build_tiny

    mask = os.umask(0o022)
    os.umask(mask)
    build_compact(tmp_path / "compact", ["Diagnosis: Center."] * 20, CompactConfig(**TINY))
    build_tiny("qwen2_vl", tmp_path / "tiny")
    for name in ("compact", "tiny"):
        files = sorted((tmp_path / name).iterdir())
        assert any(f.name == "model.safetensors" for f in files), name
        for f in files:
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~mask, f


def test_atomic_outputs_get_the_umask_mode_not_0600(tmp_path):
    """Answers, metrics and PNGs written atomically must be readable like any file the user writes."""
    import os
    import stat

    from domainvlm import io

    io.write_json(tmp_path / "m.json", {"a": 1})
    with io.atomic_path(tmp_path / "e.png", ".png") as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    for name in ("m.json", "e.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name


def test_model_files_written_through_temporary_paths_are_world_readable(tmp_path):
    """safetensors' save_file writes its own temporary file and renames it (0600): weights saved through
    atomic_path (input check, teacher) or swapped in as a folder (save_model_dir, export) were unreadable to
    other users of a shared model folder."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    from domainvlm import io

    mask = os.umask(0o022)
    os.umask(mask)
    with io.atomic_path(tmp_path / "w.safetensors", ".safetensors") as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    assert stat.S_IMODE(os.stat(tmp_path / "w.safetensors").st_mode) == 0o666 & ~mask
    staging = tmp_path / ".model.tmp"
    (staging / "sub").mkdir(parents=True)
    save_file({"a": torch.zeros(2)}, str(staging / "model.safetensors"))
    (staging / "sub" / "x.json").write_text("{}")
    os.chmod(staging / "sub", 0o700)  # as tempfile.mkdtemp makes folders
    assert stat.S_IMODE(os.stat(staging / "model.safetensors").st_mode) == 0o600  # what is being fixed
    io.swap_in(staging, tmp_path / "model")
    for p, want in (("model", 0o777), ("model/sub", 0o777), ("model/model.safetensors", 0o666),
                    ("model/sub/x.json", 0o666)):
        assert stat.S_IMODE(os.stat(tmp_path / p).st_mode) == want & ~mask, p


def test_atomic_output_to_a_folder_or_impossible_place_is_one_line(tmp_path):
    from domainvlm import io

    with pytest.raises(UserError, match="is a folder"):
        io.write_json(tmp_path, {})
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="cannot write there"):  # a file where a parent folder should be
        io.write_json(tmp_path / "f" / "m.json", {})


def test_config_partial_nested_override_keeps_the_recipes_default(tmp_path):
    """`train-expert compact.layers=2` changes one field of the recipe's model (224 px, patch 16), not the
    generic compact model's defaults; the same for a partial nested mapping in a YAML file."""
    from domainvlm.domains.wafer.expert_config import ExpertConfig

    ref = ExpertConfig().compact
    cfg = load_config(ExpertConfig, None, ["compact.layers=2"])
    assert cfg.compact.layers == 2
    assert (cfg.compact.image_size, cfg.compact.patch_size, cfg.compact.hidden) == (ref.image_size, ref.patch_size,
                                                                                    ref.hidden)
    y = tmp_path / "e.yaml"
    y.write_text("compact:\n  vision_depth: 3\n")
    cfg = load_config(ExpertConfig, y)
    assert cfg.compact.vision_depth == 3 and cfg.compact.image_size == ref.image_size


def test_config_bad_override_values_are_one_line_errors():
    with pytest.raises(UserError, match=r"field 'lora.target_modules': cannot read"):
        load_config(TrainConfig, None, ["lora.target_modules=[q_proj"])
    with pytest.raises(UserError, match="'max_steps' is not a mapping"):
        load_config(TrainConfig, None, ["max_steps=3", "max_steps.x=1"])
