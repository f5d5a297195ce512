"""Wafer-map pattern names as the data sets spell them, and defect-set helpers shared by the readers, the
answer templates and the evaluator. The answer classes themselves are data: taxonomy.json (see .taxonomy).

Names follow MixedWM38's upstream order C1..C8. WM-811K uses the same eight names plus "None" (here: Normal).
A *defect set* is a sorted tuple of pattern names; the empty tuple means Normal (no pattern).
"""

from __future__ import annotations

import functools

from ...taxonomy import split_label

# MixedWM38 `arr_1` column order (C1..C8), exactly as published.
PATTERNS: tuple[str, ...] = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Scratch", "Random")
NORMAL = "Normal"
# WM-811K failureType vocabulary ("none" in the Kaggle pickle is also accepted by the loaders).
WM811K_TYPES: tuple[str, ...] = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random",
                                 "Scratch", "None")
# Short codes used by MixedWM38's failure_type column (C-EL, D-L-ER-S, ...).
CODES = {"C": "Center", "D": "Donut", "EL": "Edge-Loc", "ER": "Edge-Ring", "L": "Loc", "NF": "Near-full",
         "S": "Scratch", "R": "Random"}
CODE_OF = {v: k for k, v in CODES.items()}

_ORDER = {p: i for i, p in enumerate(PATTERNS)}


def canonical_set(names) -> tuple[str, ...]:
    """Sort pattern names into the canonical (upstream) order; drop Normal/None; reject unknown names."""
    return _canonical(tuple(names))


@functools.lru_cache(maxsize=4096)  # a few dozen distinct sets, asked per map by readers, answers and metrics
def _canonical(names: tuple) -> tuple[str, ...]:
    out = set()
    for n in names:
        if n in (NORMAL, "None", "none", ""):
            continue
        if n not in _ORDER:
            raise ValueError(f"unknown wafer pattern {n!r}; known: {', '.join(PATTERNS)}")
        out.add(n)
    return tuple(sorted(out, key=_ORDER.__getitem__))


def split_labels(text) -> list[str]:
    """The class names of one label text, a labels CSV cell or a labelled npz's label: joined by '+' (as this
    package writes them) or by ';' / '|' (as spreadsheets often do: "Center; Scratch"); none words ("Normal")
    are left to the caller's taxonomy. taxonomy.split_label, so both readers (and classify) split alike."""
    return split_label(text)


def set_name(defects) -> str:
    """Class name of a defect set: 'Normal', 'Center', 'Center+Edge-Loc', ..."""
    return _set_name(tuple(defects))


@functools.lru_cache(maxsize=4096)
def _set_name(defects: tuple) -> str:
    d = canonical_set(defects)
    return "+".join(d) if d else NORMAL


def set_key(defects, tax=None) -> str:
    """Class name of a defect set in a model's taxonomy ``tax`` (default: the 8 patterns above, as set_name)."""
    return set_name(defects) if tax is None else ("+".join(tax.canonical(defects)) or NORMAL)


def mixedwm38_classes() -> list[str]:
    """The 38 MixedWM38 classes: Normal, 8 singles, and the 29 published mixtures (13 doubles, 12 triples,
    4 quads; Near-full and Random occur only alone), in the order of the taxonomy's answer sets."""
    from .taxonomy import default

    return [set_name(s) for s in default().answer_sets()]


def wm811k_classes() -> list[str]:
    return [t if t != "None" else NORMAL for t in WM811K_TYPES]
