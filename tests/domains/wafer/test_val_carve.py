"""Wafer data without a val split (Kaggle LSWMD.pkl: Training / Test; MixedWM38 as downloaded: no split at all):
`data build --val-fraction` carves a seeded, stratified val from train into <stem>_converted.npz, and
train-expert, which selects on val, says how when given such a file. Small synthetic files only."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from domainvlm.cli import main


def _wm_set(split=True):
    from domainvlm.domains.wafer.sources import WaferSet
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(0)
    kinds = [()] * 40 + [("Center",)] * 20 + [("Scratch",)] * 8 + [("Near-full",)] * 2
    sizes = [int(rng.integers(25, 40)) for _ in kinds]
    maps = [synth_map(d, s, rng) for d, s in zip(kinds, sizes)]
    splits = ["test" if i % 5 == 0 else "train" for i in range(len(kinds))] if split else None
    return WaferSet(maps, list(kinds), splits, "wm811k", "wm811k", "w")


def test_carve_is_stratified_seeded_and_keeps_test():
    from domainvlm.domains.wafer.val_carve import carve_val

    ws = _wm_set()
    a, b = carve_val(ws, 0.25, seed=0), carve_val(ws, 0.25, seed=0)
    assert a.split == b.split and a.split != carve_val(ws, 0.25, seed=1).split
    assert [s for s in a.split if s == "test"] == [s for s in ws.split if s == "test"]  # test maps never move
    for cls in set(ws.defects):
        train = sum(1 for d, s in zip(ws.defects, ws.split) if d == cls and s == "train")
        val = sum(1 for d, s in zip(a.defects, a.split) if d == cls and s == "val")
        assert val == round(0.25 * train), (cls, train, val)  # every class keeps its share
    assert carve_val(a, 0.5) is a  # a val split already: unchanged


def test_data_build_carves_val_into_a_converted_npz(tmp_path, capsys):
    from domainvlm.data.record import read_jsonl
    from domainvlm.domains.wafer.npz_writers import save_wm811k_npz
    from domainvlm.domains.wafer.sources import load_wafer_file

    src = tmp_path / "wm.npz"
    save_wm811k_npz(_wm_set(), src)
    out = tmp_path / "data"
    assert main(["data", "build", "--source", str(src), "--val-fraction", "0.25", "--out", str(out)]) == 0
    conv = load_wafer_file(out / "wm_converted.npz")
    assert Counter(conv.split) == {"train": 42, "val": 14, "test": 14}
    val = list(read_jsonl(out / "val.jsonl"))
    assert len(val) == 14 and all(r.images[0].startswith(str(out / "wm_converted.npz") + "#") for r in val)
    assert load_wafer_file(src).split.count("val") == 0  # the source file is left as it was


def test_mixedwm38_without_splits_gets_train_and_val(tmp_path):
    from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.synth import synth_set

    src = tmp_path / "Wafer_Map_Datasets.npz"
    save_mixedwm38_npz(synth_set(40, seed=2, classes=["Normal", "Center", "Loc", "Center+Loc"]), src,
                       with_split=False)
    assert load_wafer_file(src).split is None
    assert main(["data", "build", "--source", str(src), "--val-fraction", "0.2", "--out", str(tmp_path / "d")]) == 0
    conv = load_wafer_file(tmp_path / "d" / "Wafer_Map_Datasets_converted.npz")
    assert Counter(conv.split) == {"train": 32, "val": 8}


def test_lswmd_pickle_to_a_recipe_file(tmp_path):
    """The Kaggle pickle itself: converted with a val split carved from its Training maps."""
    pytest.importorskip("pandas")
    from test_wafer_sources import _write_old_lswmd

    from domainvlm.domains.wafer.sources import load_wafer_file

    pkl = tmp_path / "LSWMD.pkl"
    _write_old_lswmd(pkl)
    out = tmp_path / "d"
    assert main(["data", "build", "--source", str(pkl), "--allow-pickle", "--val-fraction", "0.5",
                 "--out", str(out)]) == 0
    conv = load_wafer_file(out / "LSWMD_converted.npz")
    assert Counter(conv.split) == {"train": 2, "val": 1, "test": 2}  # train: 2 Normal (1 moves) + 1 Loc (stays)


@pytest.mark.parametrize("kind", ["pickle", "no-val"])
def test_train_expert_says_how_to_get_a_val_split(tmp_path, one_error_line, kind):
    from domainvlm.domains.wafer.npz_writers import save_wm811k_npz

    if kind == "pickle":
        wm = tmp_path / "LSWMD.pkl"
        wm.write_bytes(b"\x80\x02" + b"\x00" * 64)  # a pickle header: never unpickled by the check
        words = (f"{wm}: is a pickle (WM-811K LSWMD.pkl?), which train-expert does not read; convert it once: "
                 f"domainvlm data build --source {wm} --allow-pickle --val-fraction 0.25 --out DIR, then give "
                 "DIR/LSWMD_converted.npz as wm811k=")
    else:
        wm = tmp_path / "wm.npz"
        save_wm811k_npz(_wm_set(), wm)
        words = (f"{wm}: has splits test, train, and the recipe selects on val (wm811k=); carve one from train: "
                 f"domainvlm data build --source {wm} --val-fraction 0.25 --out DIR")
    out = tmp_path / "run"
    assert main(["train-expert", f"wm811k={wm}", f"output_dir={out}"]) == 2
    err = one_error_line()
    assert words in err, err
    assert not out.exists()


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_bad_val_fraction_is_one_line(tmp_path, one_error_line, value):
    from domainvlm.domains.wafer.npz_writers import save_wm811k_npz

    save_wm811k_npz(_wm_set(), tmp_path / "wm.npz")
    out = tmp_path / "d"
    assert main(["data", "build", "--source", str(tmp_path / "wm.npz"), "--val-fraction", value,
                 "--out", str(out)]) != 0
    assert "--val-fraction: must be in [0, 1)" in one_error_line()
    assert not out.exists()
