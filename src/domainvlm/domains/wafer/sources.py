"""Wafer-map data sources: MixedWM38 npz, WM-811K flat npz, the original Kaggle ``LSWMD.pkl`` and the labelled
map npz of any taxonomy (labelled.py: ``maps_flat``/``shapes``/``offsets``/``labels``, e.g. synth_fab's sets).

Every loader returns a :class:`WaferSet` (maps with values 0 off-wafer / 1 pass / 2 fail, plus defect sets:
canonical for MixedWM38 / WM-811K; for a labelled npz the label names as written, since drawing a map needs no
taxonomy; the wafer Domain's read_source checks them against ``--taxonomy`` or the model's). Formats are
recognised by *content* (npz keys, pickle header), never by file name, because users rename files freely.
Every bad input raises a one-line :class:`UserError` naming the file and the key or row. Writing these
layouts: npz_writers.py.
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError
from .patterns import PATTERNS, WM811K_TYPES, canonical_set, set_name, split_labels

MIXED_KEYS = ("arr_0", "arr_1")
WM811K_KEYS = ("maps_flat", "shapes", "offsets", "failure_type")
LABELLED_KEYS = ("maps_flat", "shapes", "offsets", "labels")  # labelled.py: any taxonomy's label sets
_WM811K_LOOKUP = {t.lower(): t for t in WM811K_TYPES}  # the Kaggle pickle writes "none"
_PKL_SPLITS = {"training": "train", "test": "test"}


@dataclass
class WaferSet:
    maps: list[np.ndarray]
    defects: list[tuple[str, ...]]
    split: list[str] | None
    source: str
    taxonomy: str
    path: str
    skipped_unlabelled: int = 0

    def __len__(self) -> int:
        return len(self.maps)

    def splits(self) -> list[str]:
        return sorted(set(self.split)) if self.split is not None else []

    def select(self, split: str | None) -> "WaferSet":
        if split is None:
            return self
        if self.split is None:
            raise UserError(f"{self.path}: has no split column, cannot select split {split!r}")
        idx = [i for i, s in enumerate(self.split) if s == split]
        if not idx:
            raise UserError(f"{self.path}: no split {split!r}; splits present: {', '.join(self.splits())}")
        return WaferSet([self.maps[i] for i in idx], [self.defects[i] for i in idx], [split] * len(idx),
                        self.source, self.taxonomy, self.path, self.skipped_unlabelled)

    def class_name(self, i: int) -> str:
        return set_name(self.defects[i])  # () -> "Normal" in both taxonomies


# ----------------------------------------------------------------------------------------------- detection

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError)


def _get(z, key: str, path) -> np.ndarray:
    """One npz member; a damaged member or an object array (needs pickle) becomes a UserError."""
    try:
        return z[key]
    except _READ_ERRORS as e:
        raise UserError(f"{path}: key '{key}' unreadable ({e.__class__.__name__}: {e})") from None


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except _READ_ERRORS as e:
        raise UserError(f"{path}: not a readable npz file ({e.__class__.__name__}: {e})") from None


def detect_format(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK":  # npz = zip archive
        keys = _npz_keys(path)
        if all(k in keys for k in MIXED_KEYS):
            return "mixedwm38"
        if all(k in keys for k in WM811K_KEYS):
            return "wm811k-npz"
        if all(k in keys for k in LABELLED_KEYS):
            return "labelled-npz"
        raise UserError(f"{path}: unknown wafer npz layout (keys: {', '.join(keys) or 'none'}); expected "
                        f"{'/'.join(MIXED_KEYS)} (MixedWM38), {'/'.join(WM811K_KEYS)} (WM-811K) or "
                        f"{'/'.join(LABELLED_KEYS)} (labelled maps)")
    if head[:1] == b"\x80":  # pickle protocol >= 2 header
        return "wm811k-pickle"
    raise UserError(f"{path}: not a wafer-map file (expected a MixedWM38/WM-811K/labelled-map npz or LSWMD.pkl)")


def load_wafer_file(path, allow_pickle: bool = False) -> WaferSet:
    fmt = detect_format(path)
    if fmt == "mixedwm38":
        return _load_mixed(Path(path))
    if fmt == "wm811k-npz":
        return _load_wm811k_npz(Path(path))
    if fmt == "labelled-npz":
        return load_labelled_maps(Path(path))
    if not allow_pickle:
        raise UserError(f"{path}: is a pickle (WM-811K LSWMD.pkl?); pickles can run code, "
                        f"pass --allow-pickle only if you trust this file")
    return _load_lswmd_pickle(Path(path))


# ------------------------------------------------------------------------------------------------ validation

def _as_maps(a: np.ndarray, path, key: str) -> np.ndarray:
    """Coerce any integer-valued dtype (some copies use float or int64) to uint8, rejecting other values."""
    if a.dtype.kind not in "biuf":
        raise UserError(f"{path}: key '{key}' has non-numeric dtype {a.dtype}")
    ok = (a == 0) | (a == 1) | (a == 2)  # NaN compares False, so it is rejected too
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        raise UserError(f"{path}: key '{key}': map {int(bad[0])} has value {a[tuple(bad)].item()!r} "
                        f"(expected 0 off-wafer, 1 pass, 2 fail)")
    return a.astype(np.uint8, copy=False)


def _read_split(z, path, n: int) -> list[str] | None:
    if "split" not in z.files:
        return None
    s = _get(z, "split", path)
    if s.shape != (n,):
        raise UserError(f"{path}: key 'split' has shape {s.shape}, expected ({n},)")
    return [str(x) for x in s.tolist()]


def _load_mixed(path: Path) -> WaferSet:
    with np.load(path, allow_pickle=False) as z:
        maps, labels = _get(z, "arr_0", path), _get(z, "arr_1", path)
        if maps.ndim != 3:
            raise UserError(f"{path}: key 'arr_0' has shape {maps.shape}, expected (N, H, W)")
        n = len(maps)
        if labels.shape != (n, len(PATTERNS)):
            raise UserError(f"{path}: key 'arr_1' has shape {labels.shape}, expected ({n}, {len(PATTERNS)}) "
                            f"multi-hot over {', '.join(PATTERNS)}")
        if labels.dtype.kind not in "biuf":
            raise UserError(f"{path}: key 'arr_1' has non-numeric dtype {labels.dtype}")
        bad = np.flatnonzero(~np.isin(labels, (0, 1)).all(axis=1))
        if len(bad):
            raise UserError(f"{path}: key 'arr_1': row {int(bad[0])} is not 0/1 multi-hot")
        order = list(PATTERNS)
        if "label_names" in z.files:  # trust the file's own column order when it states one
            names = [str(x) for x in _get(z, "label_names", path).tolist()]
            if sorted(names) != sorted(PATTERNS):
                raise UserError(f"{path}: key 'label_names' {names} is not a permutation of {list(PATTERNS)}")
            order = names
        maps = _as_maps(maps, path, "arr_0")
        split = _read_split(z, path, n)
    # Few distinct label rows (38 in MixedWM38): decode each once.
    rows, inv = np.unique(labels.astype(np.uint8), axis=0, return_inverse=True)
    sets = [canonical_set(order[j] for j in np.flatnonzero(r)) for r in rows]
    defects = [sets[k] for k in inv.reshape(-1).tolist()]
    return WaferSet(list(maps), defects, split, "mixedwm38", "mixedwm38", str(path))


def _flat_maps(z, path, label_key: str) -> tuple[list[np.ndarray], list[str]]:
    """The maps of the flat layout (WM-811K's; the labelled npz's) and their label column, every key checked."""
    flat, shapes, offsets, lab = (_get(z, k, path) for k in ("maps_flat", "shapes", "offsets", label_key))
    if lab.ndim != 1:
        raise UserError(f"{path}: key '{label_key}' has shape {lab.shape}, expected (N,)")
    n = len(lab)
    if shapes.shape != (n, 2) or shapes.dtype.kind not in "iu":
        raise UserError(f"{path}: key 'shapes' has shape {shapes.shape} ({shapes.dtype}), expected ({n}, 2) ints")
    if offsets.shape != (n + 1,) or offsets.dtype.kind not in "iu":
        raise UserError(f"{path}: key 'offsets' has shape {offsets.shape}, expected ({n + 1},) ints")
    if flat.ndim != 1:
        raise UserError(f"{path}: key 'maps_flat' must be 1-D, got shape {flat.shape}")
    shapes, offsets = shapes.astype(np.int64), offsets.astype(np.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    bad = np.flatnonzero((shapes.min(axis=1) <= 0) | (np.diff(offsets) != sizes))
    if offsets[0] != 0 or len(bad):
        i = int(bad[0]) if len(bad) else 0
        raise UserError(f"{path}: keys 'offsets'/'shapes' inconsistent at map {i}: offsets "
                        f"{offsets[i]}..{offsets[i + 1]} but shape {tuple(shapes[i].tolist())}")
    if offsets[-1] != len(flat):
        raise UserError(f"{path}: key 'offsets' ends at {offsets[-1]} but 'maps_flat' has {len(flat)} values")
    ok = (flat == 0) | (flat == 1) | (flat == 2)
    if not ok.all():
        pos = int(np.argmin(ok))
        i = int(np.searchsorted(offsets, pos, side="right") - 1)
        raise UserError(f"{path}: key 'maps_flat': map {i} has value {flat[pos].item()!r} "
                        f"(expected 0 off-wafer, 1 pass, 2 fail)")
    flat = flat.astype(np.uint8, copy=False)
    maps = [flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(n)]  # views, no copies
    return maps, [str(x) for x in lab.tolist()]


def _load_wm811k_npz(path: Path) -> WaferSet:
    with np.load(path, allow_pickle=False) as z:
        maps, types = _flat_maps(z, path, "failure_type")
        split = _read_split(z, path, len(maps))
    defects = []
    for i, t in enumerate(types):
        name = _WM811K_LOOKUP.get(t.strip().lower())
        if name is None:
            raise UserError(f"{path}: key 'failure_type': map {i} has unknown value {t!r}; "
                            f"known: {', '.join(WM811K_TYPES)}")
        defects.append(canonical_set([name]))
    return WaferSet(maps, defects, split, "wm811k", "wm811k", str(path))


def load_labelled_maps(path) -> WaferSet:
    """A labelled map npz (labelled.py) with its label sets as written (taxonomy "custom", names unchecked):
    drawing a map needs no taxonomy; records (labelled.build_records) and training banks (load_labelled_npz)
    check the names against theirs."""
    path = Path(path)
    missing = [k for k in LABELLED_KEYS if k not in _npz_keys(path)]
    if missing:
        raise UserError(f"{path}: key '{missing[0]}' missing (a labelled map npz has {', '.join(LABELLED_KEYS)})")
    with np.load(path, allow_pickle=False) as z:
        maps, texts = _flat_maps(z, path, "labels")
        split = _read_split(z, path, len(maps))
    none = ("", "Normal", "None", "none")  # a label naming no class, as in a labels CSV (mapfiles/labels.py)
    defects = [tuple(n for n in split_labels(text) if n not in none) for text in texts]
    return WaferSet(maps, defects, split, "custom", "custom", str(path))


# ------------------------------------------------------------------------------------------ Kaggle LSWMD.pkl

def _first_str(v) -> str:
    """First non-empty string inside the Kaggle label cells: [['Edge-Ring']], [], [[]], 'none', nan."""
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode("latin-1")
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, np.ndarray):
        v = v.ravel().tolist()
    if isinstance(v, (list, tuple)):
        for x in v:
            s = _first_str(x)
            if s:
                return s
    return ""


def _pandas_unpickler():
    try:
        import pandas  # noqa: F401  (checked first: submodules can still sit in sys.modules without it)
        from pandas.core.indexes.base import Index
        from pandas.core.internals import BlockManager
    except ImportError:
        return None

    class _OldBlockManager:
        # Old pickles rebuild the manager with NEWOBJ and no args; give it the empty shell pandas' own compat
        # loader makes. __new__ may return another class's instance, and the C unpickler accepts that.
        def __new__(cls, *args):
            try:
                return BlockManager.__new__(BlockManager, *args)
            except TypeError:
                return BlockManager.__new__(BlockManager, (), [], False)

    # LSWMD.pkl comes from pandas 0.19-era Python 2: module paths and classes that pandas >= 2 no longer has.
    # Only old paths are rerouted, so a modern pickle loads exactly as pandas itself would load it.
    renamed = {(m, n): Index for m in ("pandas.indexes.numeric", "pandas.core.indexes.numeric")
               for n in ("Int64Index", "UInt64Index", "Float64Index", "NumericIndex")}
    renamed[("pandas.core.internals", "BlockManager")] = _OldBlockManager
    moved = [("pandas.indexes", "pandas.core.indexes"), ("pandas.core.index", "pandas.core.indexes.base")]
    if hasattr(np, "_core"):  # numpy >= 2 keeps numpy.core only as a deprecated alias
        moved.append(("numpy.core", "numpy._core"))

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in renamed:
                return renamed[(module, name)]
            for old, new in moved:
                if module == old or module.startswith(old + "."):
                    module = new + module[len(old):]
                    break
            return super().find_class(module, name)

    return Unpickler


def _load_lswmd_pickle(path: Path) -> WaferSet:
    unpickler = _pandas_unpickler()
    if unpickler is None:
        raise UserError(f"{path}: reading LSWMD.pkl needs pandas; install it with `pip install pandas`")
    import pandas as pd

    try:
        with open(path, "rb") as fh:
            # latin-1: the file was written by Python 2, whose byte strings (numpy buffers) carry no encoding.
            df = unpickler(fh, encoding="latin1").load()
    except Exception as e:  # a pickle can fail in arbitrarily many ways; report it as a file problem
        raise UserError(f"{path}: could not unpickle ({e.__class__.__name__}: {e})") from None
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{path}: pickle holds a {type(df).__name__}, expected the LSWMD pandas DataFrame")
    missing = [c for c in ("waferMap", "failureType") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: DataFrame lacks column(s) {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, df.columns))})")
    tt = df["trianTestLabel"].tolist() if "trianTestLabel" in df.columns else None
    maps, defects, split, skipped = [], [], [], 0
    for i, (wm, ft) in enumerate(zip(df["waferMap"].tolist(), df["failureType"].tolist())):
        label = _first_str(ft)
        if not label:  # ~640k of the 811k maps carry no label
            skipped += 1
            continue
        name = _WM811K_LOOKUP.get(label.lower())
        if name is None:
            raise UserError(f"{path}: row {i}: unknown failureType {label!r}; known: {', '.join(WM811K_TYPES)}")
        m = np.asarray(wm)
        if m.ndim != 2 or m.size == 0:
            raise UserError(f"{path}: row {i}: waferMap has shape {m.shape}, expected a 2-D map")
        if not np.isin(m, (0, 1, 2)).all():
            raise UserError(f"{path}: row {i}: waferMap has values other than 0/1/2")
        maps.append(m.astype(np.uint8, copy=False))
        defects.append(canonical_set([name]))
        if tt is not None:
            s = _first_str(tt[i])
            split.append(_PKL_SPLITS.get(s.lower(), s.lower() or "unknown"))
    return WaferSet(maps, defects, split if tt is not None else None, "wm811k", "wm811k", str(path), skipped)


# ------------------------------------------------------------------------------------------ image references

@functools.lru_cache(maxsize=4)
def _cached_set(path: str, mtime_ns: int, size: int) -> WaferSet:
    ws = load_wafer_file(path)  # mtime/size in the key: a rewritten file is reloaded, not served stale
    for m in ws.maps:  # shared by every caller: an in-place edit must fail instead of corrupting the cache
        m.flags.writeable = False
    return ws


def cached_wafer_set(path) -> WaferSet:
    """The wafer set of a file (no pickles), read once while the file is unchanged; its maps are read-only."""
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError:
        raise UserError(f"{path}: no such file") from None
    return _cached_set(p, st.st_mtime_ns, st.st_size)


def get_map(path, index: int) -> np.ndarray:
    """Map ``index`` of a wafer file, for image references ``file.npz#123`` (the set is cached)."""
    ws = cached_wafer_set(path)
    if not 0 <= index < len(ws):
        raise UserError(f"{path}#{index}: index out of range (file has {len(ws)} maps)")
    return ws.maps[index]
