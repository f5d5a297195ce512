"""Wafer-map sources: the real MixedWM38 / WM-811K files, the upstream layouts, LSWMD.pkl, and bad inputs."""

from __future__ import annotations

import copyreg
import functools
import pickle
import struct
import sys
import types
from collections import Counter

import numpy as np
import pytest

from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz, save_wm811k_npz
from domainvlm.domains.wafer.sources import WaferSet, detect_format, get_map, load_wafer_file
from domainvlm.domains.wafer.patterns import CODES, canonical_set
from domainvlm.errors import UserError

MIXED = "mixedwm38/mixedwm38_trainval.npz"
WM811K = "wm811k/wm811k_trainval.npz"


@functools.lru_cache(maxsize=2)
def _load(path: str) -> WaferSet:  # the real files take ~1 s each: load once per session
    return load_wafer_file(path)


def _raises(path, fn, *args, match=None):
    with pytest.raises(UserError) as ei:
        fn(*args)
    msg = str(ei.value)
    assert path.name in msg and "\n" not in msg, msg
    if match:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------- real data

def test_real_mixedwm38(shared_data):
    path = shared_data / MIXED
    assert detect_format(path) == "mixedwm38"
    ws = _load(str(path))
    assert (len(ws), ws.source, ws.taxonomy, ws.skipped_unlabelled) == (19389, "mixedwm38", "mixedwm38", 0)
    assert all(m.shape == (52, 52) and m.dtype == np.uint8 for m in ws.maps)
    assert Counter(ws.split) == {"train": 13686, "val": 5703}
    assert len(set(ws.defects)) == 38 and len({ws.class_name(i) for i in range(len(ws))}) == 38
    assert set(np.unique(np.stack(ws.maps)).tolist()) == {0, 1, 2}
    with np.load(path) as z:
        codes = z["failure_type"].tolist()
    decoded = {c: () if c == "Normal" else canonical_set(CODES[x] for x in c.split("-")) for c in set(codes)}
    bad = [i for i, c in enumerate(codes) if decoded[c] != ws.defects[i]]
    assert not bad, f"{len(bad)} rows disagree with failure_type, first {bad[0]}"
    train, val = ws.select("train"), ws.select("val")
    assert (len(train), len(val)) == (13686, 5703) and set(train.split) == {"train"}
    assert ws.select(None) is ws


def test_real_wm811k(shared_data):
    path = shared_data / WM811K
    assert detect_format(path) == "wm811k-npz"
    ws = _load(str(path))
    assert (len(ws), ws.source, ws.taxonomy) == (49798, "wm811k", "wm811k")
    assert Counter(ws.split) == {"train": 37348, "val": 12450}
    names = {ws.class_name(i) for i in range(len(ws))}
    assert len(names) == 9 and "Normal" in names and "None" not in names
    with np.load(path) as z:
        shapes, flat, offsets = z["shapes"], z["maps_flat"], z["offsets"]
    assert ws.maps[0].shape == tuple(shapes[0])
    assert len({m.shape for m in ws.maps}) > 10  # shapes vary
    i = 31337
    assert np.array_equal(ws.maps[i], flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]))
    assert all(m.dtype == np.uint8 for m in ws.maps[:100])


def test_upstream_mixedwm38_layout(shared_data, tmp_path):
    """The published Wafer_Map_Datasets.npz has only arr_0/arr_1 (and some copies store other dtypes)."""
    ref = _load(str(shared_data / MIXED))
    with np.load(shared_data / MIXED) as z:
        arr0, arr1 = z["arr_0"][:300], z["arr_1"][:300]
    for dtype in (np.uint8, np.int64, np.float64):
        p = tmp_path / f"Wafer_Map_Datasets_{np.dtype(dtype).name}.npz"
        np.savez(p, arr_0=arr0.astype(dtype), arr_1=arr1.astype(dtype))
        ws = load_wafer_file(p)
        assert ws.split is None and len(ws) == 300 and ws.maps[0].dtype == np.uint8
        assert ws.defects == ref.defects[:300]
        assert all(np.array_equal(a, b) for a, b in zip(ws.maps, ref.maps[:300]))
    _raises(p, ws.select, "train", match="no split")


def test_get_map_cached(shared_data):
    path = str(shared_data / WM811K)
    m = get_map(path, 7)
    assert m is get_map(path, 7) and np.array_equal(m, _load(path).maps[7])
    with pytest.raises(ValueError):
        m[0, 0] = 2  # the cached map is read-only
    with pytest.raises(UserError, match="out of range"):
        get_map(path, 49798)


# ---------------------------------------------------------------------------------------- writers, roundtrip

def _small_set(split=("train", "val", "train")):
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (9, 11)).astype(np.uint8) for _ in range(3)]
    return WaferSet(maps, [(), ("Center",), ("Donut", "Scratch")], list(split) if split else None,
                    "synthetic", "mixedwm38", "<mem>")


def test_mixedwm38_roundtrip(tmp_path):
    ws = _small_set()
    save_mixedwm38_npz(ws, tmp_path / "out.npz")
    back = load_wafer_file(tmp_path / "out.npz")
    assert back.defects == ws.defects and back.split == ws.split
    assert all(np.array_equal(a, b) for a, b in zip(back.maps, ws.maps))
    save_mixedwm38_npz(ws, tmp_path / "nosplit.npz", with_split=False)
    assert load_wafer_file(tmp_path / "nosplit.npz").split is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nosplit.npz", "out.npz"]


def test_wm811k_roundtrip_with_label_order(tmp_path):
    ws = _small_set()
    ws.defects[2] = ("Edge-Ring",)
    save_wm811k_npz(ws, tmp_path / "w.npz")
    back = load_wafer_file(tmp_path / "w.npz")
    assert back.taxonomy == "wm811k" and back.defects == ws.defects and back.split == ws.split
    # a file that states its own arr_1 column order is decoded in that order
    p = tmp_path / "perm.npz"
    np.savez(p, arr_0=np.ones((2, 5, 5), np.uint8), arr_1=np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0] * 7 + [1]]),
             label_names=np.array(["Random", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Scratch",
                                   "Center"]))
    assert load_wafer_file(p).defects == [("Random",), ("Center",)]


def test_writers_leave_nothing_on_failure(tmp_path):
    ws = _small_set()
    ws.defects[1] = ("Center", "Loc")
    _raises(tmp_path / "a.npz", save_wm811k_npz, ws, tmp_path / "a.npz", match="one type per map")
    ws = _small_set()
    ws.maps[1] = np.ones((4, 4), np.uint8)
    _raises(tmp_path / "b.npz", save_mixedwm38_npz, ws, tmp_path / "b.npz", match="one map shape")
    ws = _small_set()
    ws.maps[2][0, 0] = 7
    _raises(tmp_path / "c.npz", save_wm811k_npz, ws, tmp_path / "c.npz", match="map 2")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- bad inputs

def _mixed(tmp_path, name="bad.npz", n=6, **over):
    arrays = {"arr_0": np.ones((n, 8, 8), np.uint8), "arr_1": np.zeros((n, 8), np.uint8)}
    arrays.update(over)
    p = tmp_path / name
    np.savez(p, **{k: v for k, v in arrays.items() if v is not None})
    return p


def test_bad_npz_files(tmp_path):
    missing = tmp_path / "missing.npz"
    _raises(missing, load_wafer_file, missing, match="no such file")
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    _raises(text, load_wafer_file, text, match="not a wafer-map file")
    good = _mixed(tmp_path, "good.npz")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:200])
    _raises(trunc, load_wafer_file, trunc, match="npz")
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros(3))
    _raises(other, load_wafer_file, other, match="images")


def test_bad_mixedwm38_arrays(tmp_path):
    a = np.ones((6, 8, 8), np.uint8)
    a[4, 2, 3] = 3
    _raises(p := _mixed(tmp_path, arr_0=a), load_wafer_file, p, match="map 4")
    f = np.ones((6, 8, 8)) * 0.5
    _raises(p := _mixed(tmp_path, "f.npz", arr_0=f), load_wafer_file, p, match="arr_0")
    _raises(p := _mixed(tmp_path, "l7.npz", arr_1=np.zeros((6, 7))), load_wafer_file, p, match="arr_1")
    _raises(p := _mixed(tmp_path, "ln.npz", arr_1=np.zeros((5, 8))), load_wafer_file, p, match="arr_1")
    hot = np.zeros((6, 8))
    hot[3, 1] = 2
    _raises(p := _mixed(tmp_path, "h.npz", arr_1=hot), load_wafer_file, p, match="row 3")
    _raises(p := _mixed(tmp_path, "s.npz", split=np.array(["train"] * 5)), load_wafer_file, p, match="split")
    obj = np.empty(6, object)
    obj[:] = ["train"] * 6
    _raises(p := _mixed(tmp_path, "o.npz", split=obj), load_wafer_file, p, match="split")


def _wm(tmp_path, name="w.npz", **over):
    maps = [np.ones((3, 4), np.uint8), np.full((2, 5), 2, np.uint8), np.zeros((4, 4), np.uint8)]
    arrays = {"maps_flat": np.concatenate([m.ravel() for m in maps]), "shapes": np.array([m.shape for m in maps]),
              "offsets": np.array([0, 12, 22, 38]), "failure_type": np.array(["None", "Loc", "Donut"]),
              "split": np.array(["train", "val", "train"])}
    arrays.update(over)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def test_bad_wm811k_arrays(tmp_path):
    ws = load_wafer_file(_wm(tmp_path))
    assert ws.defects == [(), ("Loc",), ("Donut",)] and [m.shape for m in ws.maps] == [(3, 4), (2, 5), (4, 4)]
    _raises(p := _wm(tmp_path, "o.npz", offsets=np.array([0, 12, 23, 38])), load_wafer_file, p, match="map 1")
    _raises(p := _wm(tmp_path, "e.npz", offsets=np.array([0, 12, 22, 37])), load_wafer_file, p)
    _raises(p := _wm(tmp_path, "s.npz", shapes=np.array([[3, 4], [2, 5]])), load_wafer_file, p, match="shapes")
    _raises(p := _wm(tmp_path, "t.npz", failure_type=np.array(["None", "Loc", "Blob"])), load_wafer_file, p,
            match="map 2 has unknown value 'Blob'")
    flat = np.ones(38, np.uint8)
    flat[30] = 9
    _raises(p := _wm(tmp_path, "v.npz", maps_flat=flat), load_wafer_file, p, match="map 2")
    _raises(p := _wm(tmp_path), ws.select, "test", match="splits present: train, val")


# ---------------------------------------------------------------------------------- Kaggle LSWMD.pkl (old)

class _Old:
    """Stand-in for a pandas-0.19 object: pickled as NEWOBJ(cls) + BUILD(state), like the real file."""

    def __init__(self, state):
        self.state = state

    def __reduce_ex__(self, proto):
        return copyreg.__newobj__, (type(self),), self.state


class _OldFrame(_Old):
    pass


class _OldManager(_Old):
    pass


class _OldIndexClass:
    pass


class _OldInt64Index:
    pass


def _old_new_index(cls, d):
    raise AssertionError("only a pickling stand-in")


class _OldIndex:
    def __init__(self, cls, d):
        self.cls, self.d = cls, d

    def __reduce__(self):
        return _old_new_index, (self.cls, self.d)


# Where pandas 0.19 / numpy 1.x kept these objects: the module paths the loader must reroute.
_OLD_NAMES = {_OldFrame: ("pandas.core.frame", "DataFrame"), _OldManager: ("pandas.core.internals", "BlockManager"),
              _old_new_index: ("pandas.indexes.base", "_new_Index"), _OldIndexClass: ("pandas.indexes.base", "Index"),
              _OldInt64Index: ("pandas.indexes.numeric", "Int64Index")}
if hasattr(np, "_core"):
    _OLD_NAMES[np._core.multiarray._reconstruct] = ("numpy.core.multiarray", "_reconstruct")


class _Py2Pickler(pickle._Pickler):
    """Writes old module paths and Python-2 byte strings (no encoding attached), as LSWMD.pkl has them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_global(self, obj, name=None):
        if obj in _OLD_NAMES:
            module, name = _OLD_NAMES[obj]
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[types.FunctionType] = save_global


def _lswmd_rows():
    rng = np.random.default_rng(3)
    maps = [rng.integers(0, 3, (5 + i, 7)).astype(np.uint8) for i in range(7)]
    maps[4] = maps[4].astype(np.int64)
    ft = [np.array([["none"]]), np.zeros((0, 0)), np.array([["Edge-Ring"]]), np.array([[]]), [["Loc"]], "none",
          np.array([[b"Scratch"]])]
    tt = [np.array([["Training"]]), np.zeros((0, 0)), np.array([["Test"]]), np.zeros((0, 0)), [["Training"]],
          "Training", np.array([["Test"]])]
    return maps, ft, tt


def _cells(values):
    a = np.empty(len(values), object)
    a[:] = values
    return a


def _write_old_lswmd(path):
    maps, ft, tt = _lswmd_rows()
    n = len(maps)
    cols = ["waferMap", "dieSize", "lotName", "waferIndex", "trianTestLabel", "failureType"]
    obj = np.stack([_cells(maps), _cells([b"lot1"] * n), _cells(tt), _cells(ft)])
    flt = np.array([[1683.0] * n, np.arange(1.0, n + 1)])
    axes = [_OldIndex(_OldIndexClass, {"data": np.array(cols, object), "name": None}),
            _OldIndex(_OldInt64Index, {"data": np.arange(n, dtype=np.int64), "name": None})]
    blocks = [{"values": obj, "mgr_locs": np.array([0, 2, 4, 5])}, {"values": flt, "mgr_locs": np.array([1, 3])}]
    mgr = _OldManager((axes, [obj, flt], [None, None], {"0.14.1": {"axes": axes, "blocks": blocks}}))
    frame = _OldFrame({"_data": mgr, "_typ": "dataframe", "_metadata": []})
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(frame)


def _check_lswmd(ws, path):
    maps, _, _ = _lswmd_rows()
    keep = [0, 2, 4, 5, 6]
    assert (ws.source, ws.taxonomy, ws.skipped_unlabelled, ws.path) == ("wm811k", "wm811k", 2, str(path))
    assert ws.defects == [(), ("Edge-Ring",), ("Loc",), (), ("Scratch",)]
    assert ws.split == ["train", "test", "train", "train", "test"]
    assert [ws.class_name(i) for i in range(len(ws))] == ["Normal", "Edge-Ring", "Loc", "Normal", "Scratch"]
    assert all(np.array_equal(a, maps[k]) and a.dtype == np.uint8 for a, k in zip(ws.maps, keep))


def test_old_lswmd_pickle(tmp_path):
    pytest.importorskip("pandas")
    path = tmp_path / "LSWMD.pkl"
    _write_old_lswmd(path)
    with pytest.raises(Exception):  # what users hit with plain pandas: the reason this loader exists
        pickle.load(open(path, "rb"))
    assert detect_format(path) == "wm811k-pickle"
    msg = _raises(path, load_wafer_file, path)
    assert msg == (f"{path}: is a pickle (WM-811K LSWMD.pkl?); pickles can run code, pass --allow-pickle only if "
                   f"you trust this file")
    ws = load_wafer_file(path, allow_pickle=True)
    _check_lswmd(ws, path)
    save_wm811k_npz(ws, tmp_path / "wm811k.npz")  # the one-time conversion
    back = load_wafer_file(tmp_path / "wm811k.npz")
    assert back.defects == ws.defects and back.split == ws.split
    assert all(np.array_equal(a, b) for a, b in zip(back.maps, ws.maps))


def test_modern_lswmd_pickle_and_errors(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    maps, ft, tt = _lswmd_rows()
    df = pd.DataFrame({"waferMap": _cells(maps), "dieSize": 1683.0, "lotName": "lot1",
                       "waferIndex": np.arange(1.0, 8), "trianTestLabel": _cells(tt), "failureType": _cells(ft)})
    path = tmp_path / "resaved.pkl"
    df.to_pickle(path)
    _check_lswmd(load_wafer_file(path, allow_pickle=True), path)
    df.loc[2, "failureType"] = np.array([["Blob"]])
    df.to_pickle(bad := tmp_path / "bad.pkl")
    _raises(bad, load_wafer_file, bad, True, match="row 2: unknown failureType 'Blob'")
    pd.DataFrame({"x": [1]}).to_pickle(other := tmp_path / "other.pkl")
    _raises(other, load_wafer_file, other, True, match="waferMap")
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas not installed
    _raises(path, load_wafer_file, path, True, match="pip install pandas")
