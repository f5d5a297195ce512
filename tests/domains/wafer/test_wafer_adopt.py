"""A wafer model evaluated on pictures of wafer maps in class folders (or a CSV of PNGs): read as wafer records
of the model's taxonomy (domains/wafer/adopt.py), not as image classes that no wafer answer could match."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domainvlm.cli import main
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "exports"
    for name, pats in (("center", ("Center",)), ("Edge Ring", ("Edge-Ring",)), ("none", ()),
                       ("Center+Scratch", ("Center", "Scratch"))):  # a mixture folder: two classes
        (root / name).mkdir(parents=True)
        for i in range(2):
            render_map(synth_map(pats, 40, rng)).save(root / name / f"{i}.png")
    return root


def test_class_folders_of_pngs_are_wafer_records(folders, tiny_wafer_head_dir, tmp_path):
    """The bundled expert on such a folder scored 0 % with every answer unparsed ('Class: Center' references)."""
    from domainvlm.data.sources import load_any
    from domainvlm.evaluate.for_model import records_for_model

    recs = records_for_model(load_any(folders, model_dir=str(tiny_wafer_head_dir), langs=("en",), explain=False),
                             tiny_wafer_head_dir, folders)
    assert {r.labels["task"] for r in recs} == {"wafer"}
    assert sorted(tuple(r.labels["defects"]) for r in recs) == [(), (), ("Center",), ("Center",), ("Center", "Scratch"),
                                                                ("Center", "Scratch"), ("Edge-Ring",), ("Edge-Ring",)]
    assert all(r.messages[1]["content"].startswith("Diagnosis: ") for r in recs)
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(tiny_wafer_head_dir), "--data", str(folders), "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["task"] == "wafer" and m["n"] == 8 and m["unparsed"] == 0  # the head's lines parse as diagnoses
    assert set(m["per_class"]) >= {"Center", "Edge-Ring", "Normal", "Center+Scratch"}


def test_an_unknown_folder_is_one_line_and_other_domains_do_not_fit(folders, tiny_wafer_head_dir, tmp_path,
                                                                     one_error_line):
    (folders / "Blob").mkdir()
    (folders / "none" / "0.png").rename(folders / "Blob" / "0.png")
    assert main(["eval", "--model", str(tiny_wafer_head_dir), "--data", str(folders), "--out",
                 str(tmp_path / "m.json")]) == 2
    err = one_error_line()
    assert f"{folders / 'Blob' / '0.png'}: field 'labels': unknown wafer pattern 'Blob'" in err
    assert not (tmp_path / "m.json").exists()
    # a model answering in another domain (a classify head) given wafer maps: one line before any model loads
    npz = tmp_path / "maps.npz"
    assert main(["data", "synth", "--out", str(npz), "--n", "8", "--size", "32"]) == 0
    other = tmp_path / "classify-model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "domainvlm": {"answer_head": "classify"}}))
    assert main(["eval", "--model", str(other), "--data", str(npz), "--out", str(tmp_path / "m.json")]) == 2
    err = one_error_line()
    assert f"{npz}: 'wafer' records, but {other} answers 'classify' questions" in err, err
