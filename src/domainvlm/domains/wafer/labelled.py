"""Labelled wafer maps of any taxonomy in one npz: the new-class maps the taxonomy-extension recipe trains on.

Layout (WM-811K's flat one, with label sets instead of one failure type)::

    maps_flat (M,) uint8   0 off-wafer / 1 pass / 2 fail; map i = maps_flat[offsets[i]:offsets[i+1]]
    shapes    (N, 2) int   rows, cols of each map (sizes may differ)
    offsets   (N+1,) int
    labels    (N,) str     the map's classes joined by '+' ("Center+Reticle-Repeat"; read: ';' / '|' too, as a
                           labels CSV, patterns.split_labels); "Normal" or "" for none
    split     (N,) str     optional: train / val / ...

Written by ``python -m domainvlm.domains.wafer.synth_fab``; read by train-expert's ``new_data`` (expert_extend.py)
and, as every wafer npz, by the user commands (``sources.detect_format``: "labelled-npz"): image references
``FILE.npz#K`` need no taxonomy (``sources.load_labelled_maps``); records (``data build`` / ``eval``) are
read with ``--taxonomy`` or the evaluated model's taxonomy.json (:func:`build_records`). Class names are checked against
the taxonomy the maps are read for (one clear line naming the map otherwise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from .npz_writers import check_maps, flat_arrays, write_npz
from .sources import WaferSet, load_labelled_maps


def label_text(defects, tax=None) -> str:
    """'A+B' in taxonomy order (as given when ``tax`` is None), or the none label."""
    return "+".join(tax.canonical(defects) if tax is not None else defects) or (
        tax.none_label if tax is not None and tax.none_label else "Normal")


def save_labelled_npz(ws: WaferSet, path, tax=None) -> None:
    check_maps(ws, path)
    write_npz(path, flat_arrays(ws) | {"labels": np.array([label_text(d, tax) for d in ws.defects], dtype=str)})


def load_labelled_npz(path, tax, split: str | None = None) -> WaferSet:
    """The maps of ``path`` (optionally one split) with their label sets canonical in ``tax``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    ws = load_labelled_maps(path)
    defects = []
    for i, d in enumerate(ws.defects):
        try:
            defects.append(tax.canonical(d))
        except ValueError as e:
            raise UserError(f"{path}: key 'labels': map {i}: {e}") from None
    ws = WaferSet(ws.maps, defects, ws.split, "custom", "custom", str(path))
    return ws.select(split) if split else ws


def build_records(ws: WaferSet, path, indices, langs=("en", "zh"), seed: int = 0, explain: bool = True,
                  follow_up_frac: float = 0.0, taxonomy=None, model_dir=None) -> list:
    """The wafer Domain's read_source for a labelled npz (``ws``: its maps as written, of which ``indices``),
    with the taxonomy of ``taxonomy`` / ``model_dir`` exactly as a labels CSV (mapfiles/labels.py): records of
    a taxonomy beyond the 8 patterns say ``labels.taxonomy: custom`` and their answers name its classes."""
    import random

    from .instruct import wafer_record
    from .mapfiles.labels import check_names
    from .taxonomy import reading

    tax, own, src = reading(taxonomy, model_dir)
    rng = random.Random(seed)
    out = []
    for i in indices:
        defects = check_names(ws.defects[i], f"{path}: key 'labels': map {i}", tax, src)
        sp = ws.split[i] if ws.split is not None else None
        # ids name the map index: eval's "record 'test-3'" errors point at map 3 of test.npz
        out.append(wafer_record(f"{path}#{i}", defects, rng.choice(list(langs)), f"{Path(path).stem}-{i}", rng,
                                explain, rng.random() < follow_up_frac, "custom" if own else "mixedwm38", sp,
                                "labelled-npz", tax if own else None))
    return out
