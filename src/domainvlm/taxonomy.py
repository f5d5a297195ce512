"""A taxonomy is data: the classes a model answers with, stored as ``taxonomy.json`` in its model folder.

It is read by the constrained answer head (the valid answer lines), the instruction builder (names and
descriptions in en/zh) and the metrics (class order). Users write it as YAML or JSON::

    name: neu-steel
    multi_label: false            # true: an answer names a set of classes ("A + B"), or the none class
    none_label: Normal            # multi-label only: the answer when no class is present (optional)
    classes:
      - name: crazing
        zh: 龟裂
        description: {en: "a network of fine cracks over the surface", zh: "表面细密的网状裂纹"}
      - scratches                 # a bare name is allowed
    combinations:                 # multi-label only, optional: the allowed label sets (default: any)
      - [crazing, scratches]
    all_fail: null                # optional: the class of an input with no passing unit at all (a wafer map
                                  # whose every die fails: WM-811K labels it Near-full); without it such an
                                  # input abstains as unreadable
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .io import write_json

FILE_NAME = "taxonomy.json"
# Characters that join or separate class names where label sets are written as text ('Center+Scratch'; labels
# CSV cells 'Center; Scratch' or 'Center|Scratch'), so a class name holding one could not be read back.
RESERVED = "+;|\n"
RESERVED_NOTE = "'+', ';' and '|' join several classes in one label"


def label_key(text: str) -> str:
    """A label as written by hand, for matching: Unicode-normalised (full-width letters and brackets), case
    folded, without spaces, '-' and '_'."""
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text)).casefold()


def split_label(text) -> list[str]:
    """The class names of one label text ('Center+Scratch', a labels CSV cell 'Center; Scratch' or
    'Center|Scratch', a folder name): split on the joiners of RESERVED, stripped, empties dropped. The one
    splitter, so every reader of label text splits it alike."""
    return [t for t in (s.strip() for s in re.split(r"[+;|\n]", text or "")) if t]


def reserved_char(name: str) -> str | None:
    """The first character of `name` that a label text reserves, or None."""
    return next((ch for ch in name if ch in RESERVED), None)


@dataclass(frozen=True)
class TaxonomyClass:
    name: str
    zh: str = ""
    description: dict = field(default_factory=dict)  # {"en": "...", "zh": "..."}

    def display(self, lang: str = "en") -> str:
        """The class name as an answer shows it: 'crazing' (en) or '龟裂(crazing)' (zh, when a zh name exists)."""
        return f"{self.zh}({self.name})" if lang == "zh" and self.zh else self.name

    def describe(self, lang: str = "en") -> str:
        return self.description.get(lang) or self.description.get("en", "")


@dataclass
class Taxonomy:
    name: str
    classes: list[TaxonomyClass]
    multi_label: bool = False
    none_label: str | None = None
    combinations: list[tuple[str, ...]] | None = None
    all_fail: str | None = None

    def __post_init__(self):
        self.validate()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def get(self, name: str) -> TaxonomyClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def resolve(self, name: str) -> str | None:
        """The class a label written by hand means: its exact name, else the one whose English or Chinese
        name (or '中文(English)' display) equals ``name`` up to case, spaces, '-' and '_' ("edge ring",
        "EDGE_RING", "边缘环" -> "Edge-Ring"); None when no class, or more than one, matches."""
        if name in self.names:
            return name
        key = label_key(name)
        hits = {c.name for c in self.classes
                for alias in (c.name, c.zh, c.display("zh")) if alias and label_key(alias) == key}
        return hits.pop() if len(hits) == 1 else None

    def canonical(self, labels) -> tuple[str, ...]:
        """Labels in taxonomy order, the none label dropped; unknown names raise ValueError."""
        order = {n: i for i, n in enumerate(self.names)}
        got = set()
        for n in labels:
            if n == self.none_label or n in ("", None):
                continue
            if n not in order:
                raise ValueError(f"unknown class {n!r} (known: {', '.join(self.names)})")
            got.add(n)
        if not self.multi_label and len(got) > 1:
            raise ValueError(f"{sorted(got)}: taxonomy {self.name!r} is single-label")
        return tuple(sorted(got, key=order.__getitem__))

    def answer_sets(self) -> list[tuple[str, ...]]:
        """Every label set an answer may name: one class each (single-label); for multi-label the empty set
        (if a none label exists), the singles and the allowed combinations (all subsets if none are listed)."""
        if not self.multi_label:
            return [(n,) for n in self.names]
        if self.combinations is not None:
            sets = [()] if self.none_label else []
            sets += [(n,) for n in self.names]
            return sets + [tuple(c) for c in self.combinations if len(c) > 1]
        from itertools import combinations

        sets = [()] if self.none_label else []
        for k in range(1, len(self.names) + 1):
            sets += list(combinations(self.names, k))
        return sets

    def validate(self, source: str = "taxonomy") -> None:
        if not self.name or not isinstance(self.name, str):
            raise UserError(f"{source}: field 'name' must be a non-empty string")
        if not self.classes:
            raise UserError(f"{source}: field 'classes' must list at least one class")
        seen = set()
        for i, c in enumerate(self.classes):
            if not c.name or not isinstance(c.name, str):
                raise UserError(f"{source}: classes[{i}]: field 'name' must be a non-empty string")
            if c.name in seen:
                raise UserError(f"{source}: classes[{i}]: duplicate class {c.name!r}")
            if reserved_char(c.name):
                raise UserError(f"{source}: classes[{i}]: class name {c.name!r} may not contain "
                                f"{reserved_char(c.name)!r} ({RESERVED_NOTE})")
            seen.add(c.name)
        if self.none_label is not None and self.none_label in seen:
            raise UserError(f"{source}: field 'none_label': {self.none_label!r} is also a class")
        if self.combinations is not None:
            if not self.multi_label:
                raise UserError(f"{source}: field 'combinations' needs multi_label: true")
            for i, combo in enumerate(self.combinations):
                bad = [n for n in combo if n not in seen]
                if bad:
                    raise UserError(f"{source}: combinations[{i}]: unknown class {bad[0]!r}")
                if len(set(combo)) != len(combo):
                    raise UserError(f"{source}: combinations[{i}]: a class is named twice")
        if self.all_fail is not None and self.all_fail not in seen:
            raise UserError(f"{source}: field 'all_fail': {self.all_fail!r} is not a class")

    def to_dict(self) -> dict:
        d = {"name": self.name, "multi_label": self.multi_label,
             "classes": [{"name": c.name, "zh": c.zh, "description": dict(c.description)} for c in self.classes]}
        if self.none_label is not None:
            d["none_label"] = self.none_label
        if self.combinations is not None:
            d["combinations"] = [list(c) for c in self.combinations]
        if self.all_fail is not None:
            d["all_fail"] = self.all_fail
        return d

    def save(self, folder) -> Path:
        path = Path(folder) / FILE_NAME
        write_json(path, self.to_dict())
        return path


def _parse_classes(d: dict, source: str) -> list[TaxonomyClass]:
    raw = d.get("classes")
    if not isinstance(raw, list):
        raise UserError(f"{source}: field 'classes' must be a list")
    classes = []
    for i, c in enumerate(raw):
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict):
            raise UserError(f"{source}: classes[{i}] must be a name or a mapping")
        desc = c.get("description") or {}
        if isinstance(desc, str):
            desc = {"en": desc}
        if not isinstance(desc, dict):
            raise UserError(f"{source}: classes[{i}]: field 'description' must be text or {{en, zh}}")
        classes.append(TaxonomyClass(str(c.get("name") or ""), str(c.get("zh") or ""),
                                     {str(k): str(v) for k, v in desc.items()}))
    return classes


def _parse_combinations(d: dict, source: str) -> list[tuple[str, ...]] | None:
    combos = d.get("combinations")
    if combos is not None:
        if not isinstance(combos, list) or not all(isinstance(x, list) for x in combos):
            raise UserError(f"{source}: field 'combinations' must be a list of lists of class names")
        combos = [tuple(str(n) for n in x) for x in combos]
    return combos


def _check_fields(d, source: str) -> None:
    if not isinstance(d, dict):
        raise UserError(f"{source}: a taxonomy must be a mapping with 'name' and 'classes'")
    unknown = set(d) - {"name", "multi_label", "none_label", "classes", "combinations", "all_fail"}
    if unknown:
        raise UserError(f"{source}: unknown field {sorted(unknown)[0]!r}")
    if not isinstance(d.get("multi_label", False), bool):
        raise UserError(f"{source}: field 'multi_label' must be true or false")


def _make(name, classes, multi, none_label, combos, source: str, all_fail=None) -> Taxonomy:
    tax = Taxonomy.__new__(Taxonomy)  # validate with the file named, not the default source
    tax.name, tax.classes, tax.multi_label = str(name or ""), classes, multi
    tax.none_label, tax.combinations, tax.all_fail = none_label, combos, all_fail
    tax.validate(source)
    return tax


def from_dict(d, source: str = "taxonomy") -> Taxonomy:
    _check_fields(d, source)
    return _make(d.get("name"), _parse_classes(d, source), d.get("multi_label", False), d.get("none_label"),
                 _parse_combinations(d, source), source, d.get("all_fail"))


def extend(base: Taxonomy, path) -> Taxonomy:
    """``base`` (a model's taxonomy) with the classes and combinations of the YAML/JSON file ``path`` added.

    Continuing a model on a new taxonomy may add classes, never drop or rename one: the base's classes keep
    their names, order and descriptions (the file may list them or not), new classes follow in the file's
    order, and the file's combinations may mix old and new classes. ``multi_label`` and ``none_label``, if the
    file gives them, must match the base's. Extending twice with the same file changes nothing.
    """
    path = Path(path)
    d, source = _read(path), str(path)
    _check_fields(d, source)
    for key, have in (("multi_label", base.multi_label), ("none_label", base.none_label),
                      ("all_fail", base.all_fail)):
        if key in d and d[key] != have:
            raise UserError(f"{source}: field '{key}' is {d[key]!r} but the model's taxonomy has {have!r}")
    names = set(base.names)
    own = _parse_classes(d, source)
    _make(d.get("name") or base.name, own, base.multi_label, None, None, source)  # errors name the file's index
    classes = list(base.classes) + [c for c in own if c.name not in names]
    combos = _parse_combinations(d, source)
    known = {c.name for c in classes}
    for i, combo in enumerate(combos or []):
        bad = [n for n in combo if n not in known]
        if bad:
            raise UserError(f"{source}: combinations[{i}]: unknown class {bad[0]!r}")
    if base.combinations is not None:
        have = set(base.combinations)
        combos = list(base.combinations) + [c for c in dict.fromkeys(combos or []) if c not in have]
    elif base.multi_label:
        combos = None  # the base allows every subset: so does the extension
    return _make(d.get("name") or base.name, classes, base.multi_label, base.none_label, combos, source,
                 base.all_fail)


def _read(path: Path):
    """The parsed YAML/JSON of a taxonomy file (not yet checked)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such taxonomy file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                        f"{str(e).splitlines()[0]}") from None


def load(path) -> Taxonomy:
    """A taxonomy from a YAML/JSON file, or from a model folder's taxonomy.json."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    return from_dict(_read(path), str(path))


def from_model_dir(folder) -> Taxonomy | None:
    """The taxonomy stored in a model folder, or None if it has none."""
    p = Path(folder) / FILE_NAME
    return load(p) if p.is_file() else None
