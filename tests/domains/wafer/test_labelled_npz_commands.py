"""The labelled map npz (labelled.py, written by synth_fab) through the user commands: detected by its keys,
``FILE.npz#K`` drawn without a taxonomy, records read with --taxonomy or the model's taxonomy.json, eval."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from domainvlm.cli import main
from domainvlm.data.images import load_image
from domainvlm.data.sources import load_any
from domainvlm.domains.wafer.fab_patterns import FAB_PATTERNS
from domainvlm.domains.wafer.knowledge import parse_diagnosis
from domainvlm.domains.wafer.labelled import save_labelled_npz
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.sources import WaferSet, detect_format, get_map, load_wafer_file
from domainvlm.domains.wafer.synth import synth_set
from domainvlm.domains.wafer.synth_fab import synth_fab_set
from domainvlm.domains.wafer.taxonomy import default
from domainvlm.errors import UserError
from domainvlm.taxonomy import extend, load

ROOT = Path(__file__).resolve().parents[3]
YAML = ROOT / "configs" / "fab-patterns.yaml"
Q = "What defect pattern does this wafer map show?"


def _save(tmp_path, ws, name, split=None) -> Path:
    p = tmp_path / name
    save_labelled_npz(WaferSet(ws.maps, ws.defects, split, "custom", "custom", str(p)), p)
    return p


@pytest.fixture
def fab(tmp_path):
    """5 maps, as synth_fab's test.npz: one per fab class (some mixed with a known pattern) + 2 known-class maps."""
    ws = synth_fab_set(1, seed=3, negatives=2)
    return _save(tmp_path, ws, "fab.npz", ["test"] * len(ws)), ws


@pytest.fixture
def known(tmp_path):
    ws = synth_set(4, size=40, seed=2, classes=["Normal", "Center", "Edge-Loc+Scratch", "Donut"])
    return _save(tmp_path, ws, "known.npz"), ws


def test_detected_by_keys_and_maps_drawn_without_a_taxonomy(fab, tmp_path):
    p, ws = fab
    assert detect_format(p) == "labelled-npz"
    assert load_wafer_file(p).defects == ws.defects  # the label names as written
    assert np.array_equal(get_map(str(p), 3), ws.maps[3])
    assert np.array_equal(np.asarray(load_image(f"{p}#3")), np.asarray(render_map(ws.maps[3])))
    with pytest.raises(UserError, match=r"fab\.npz#5: index out of range \(file has 5 maps\)"):
        get_map(str(p), 5)
    np.savez(tmp_path / "other.npz", maps_flat=np.zeros(4, np.uint8), lables=np.array(["x"]))
    with pytest.raises(UserError, match=r"unknown wafer npz layout .*maps_flat/shapes/offsets/labels "
                                        r"\(labelled maps\)"):
        detect_format(tmp_path / "other.npz")
    with np.load(p) as z:
        arrays = dict(z)
    arrays["maps_flat"][int(arrays["offsets"][2]) + 1] = 7  # a die value of map 2
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=r"bad\.npz: key 'maps_flat': map 2 has value 7"):
        get_map(str(tmp_path / "bad.npz"), 0)


def test_records_name_the_custom_classes_with_a_taxonomy(fab, fab_model):
    p, ws = fab
    tax = extend(default(), YAML)
    recs = load_any(p, taxonomy=str(YAML), langs=("en", "zh"), seed=1)
    assert [r.labels["defects"] for r in recs] == [list(tax.canonical(d)) for d in ws.defects]
    assert {r.labels["taxonomy"] for r in recs} == {"custom"} and {r.meta["split"] for r in recs} == {"test"}
    assert [r.images[0] for r in recs] == [f"{p}#{i}" for i in range(len(ws))]
    for r in recs:
        assert parse_diagnosis(r.messages[1]["content"], tax) == tuple(r.labels["defects"])
    assert sum(c in r.labels["defects"] for r in recs for c in FAB_PATTERNS) == len(FAB_PATTERNS)
    # a model folder as --taxonomy, or eval's model (its taxonomy.json) without one: the same records
    same = lambda kw: [r.to_dict() for r in load_any(p, langs=("en", "zh"), seed=1, **kw)]  # noqa: E731
    want = [r.to_dict() for r in recs]
    assert same({"taxonomy": str(fab_model)}) == want == same({"model_dir": str(fab_model)})


def test_known_classes_read_without_a_taxonomy(known):
    p, ws = known
    recs = load_any(p, langs=("en",))
    assert [tuple(r.labels["defects"]) for r in recs] == ws.defects and any(not d for d in ws.defects)
    assert {r.labels["taxonomy"] for r in recs} == {"mixedwm38"}
    assert all(parse_diagnosis(r.messages[1]["content"]) == tuple(r.labels["defects"]) for r in recs)


def test_unknown_class_and_split_errors(fab, known, tmp_path):
    p, ws = fab
    first = next(i for i, d in enumerate(ws.defects) if set(d) & set(FAB_PATTERNS))
    with pytest.raises(UserError, match=rf"fab\.npz: key 'labels': map {first}: unknown wafer pattern '[A-Za-z-]+' "
                                        r"\(a class of your own: .*--taxonomy FILE\)"):
        load_any(p)
    typo = [("Probe-Kard",) if "Probe-Card" in d else d for d in ws.defects]
    bad = _save(tmp_path, WaferSet(ws.maps, typo, None, "", "", ""), "typo.npz")
    i = typo.index(("Probe-Kard",))
    with pytest.raises(UserError, match=rf"typo\.npz: key 'labels': map {i}: unknown wafer pattern 'Probe-Kard' "
                                        r"in neither the 8 known patterns nor .*fab-patterns\.yaml"):
        load_any(bad, taxonomy=str(YAML))
    with pytest.raises(UserError, match=r"known\.npz: a labelled map set has no split column \(its file name names "
                                        r"no split\); --split test selects none of it \(leave --split out"):
        load_any(known[0], split="test")
    # without a split column its split is its file's name (synth_fab's train.npz / val.npz / test.npz): so
    # `eval / calibrate --data val.npz --data mixedwm38.npz --split val` takes all of val.npz
    val = _save(tmp_path, known[1], "val.npz")
    assert len(load_any(val, split="val", langs=("en",))) == len(load_any(val, langs=("en",))) == len(known[1])
    assert len(load_any(val, split="validation", langs=("en",))) == len(known[1])
    with pytest.raises(UserError, match=r"val\.npz: .*\(its split is 'val', by its file name\); --split train"):
        load_any(val, split="train")
    with pytest.raises(UserError, match=r"fab\.npz: no maps in split 'val' \(present: test\)"):
        load_any(p, split="val", taxonomy=str(YAML))


def test_data_build_and_ask(fab, tiny_model_dir, tmp_path, capsys):
    p, ws = fab
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(p), "--taxonomy", str(YAML), "--out", str(out)]) == 0
    assert len((out / "test.jsonl").read_text().splitlines()) == len(ws)
    assert load(out / "taxonomy.json").to_dict() == extend(default(), YAML).to_dict()
    assert main(["ask", "--model", str(tiny_model_dir), "--image", f"{p}#3", Q]) == 0
    assert capsys.readouterr().out.strip()


def _eval(model, data, out, *extra) -> int:
    return main(["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet",
                 "--facts-limit", "0", *extra])


def test_eval_scores_the_models_own_classes(fab, fab_model, tmp_path, capsys):
    p, ws = fab
    m_path = tmp_path / "m.json"
    assert _eval(fab_model, p, m_path, "--split", "test") == 0
    assert "Traceback" not in capsys.readouterr().err
    m = json.loads(m_path.read_text())
    assert m["n"] == len(ws) and m["unparsed"] == 0
    assert {c: m["per_pattern"][c]["support"] for c in FAB_PATTERNS} == {c: 1 for c in FAB_PATTERNS}


def test_eval_default_model_on_known_classes(known, tiny_wafer_head_dir, tmp_path):
    p, ws = known
    assert _eval(tiny_wafer_head_dir, p, tmp_path / "m.json") == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == len(ws)


def test_eval_bad_file_one_line_no_out(fab, tiny_wafer_head_dir, tmp_path, one_error_line):
    p, ws = fab
    m_path = tmp_path / "m.json"
    assert _eval(tiny_wafer_head_dir, p, m_path) == 2  # fab classes, a model of the 8 patterns
    assert re.search(r"fab\.npz: key 'labels': map \d+: unknown wafer pattern .*--taxonomy", one_error_line())
    (tmp_path / "broken.npz").write_bytes(p.read_bytes()[:200])
    assert _eval(tiny_wafer_head_dir, tmp_path / "broken.npz", m_path) == 2
    assert "broken.npz" in one_error_line()
    assert not m_path.exists()
