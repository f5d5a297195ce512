"""KLARF inspection results -> die maps: dies with at least one defect fail, the other inspected dies pass.

KLARF 1.2 (flat, ``Keyword values;``): ``WaferID`` starts a wafer, ``SampleTestPlan N`` lists the inspected
dies (XINDEX YINDEX pairs), ``DefectRecordSpec`` names the ``DefectList`` columns (XINDEX / YINDEX used).
KLARF 1.8 (``Record FileRecord "1.8" { Record LotRecord { Record WaferRecord "W01" { Field ... List DefectList
{ Columns .. Data .. } } } }``): the same fields inside each WaferRecord; the die list is a ``SampleTestPlan``
List (or Field of XINDEX YINDEX pairs). Die indices grow rightwards and upwards; ``OrientationMarkLocation``
(DOWN/UP/LEFT/RIGHT) is where the notch is. ``SampleDieMap`` (the same pairs) lists every die of the wafer: its
dies outside the SampleTestPlan were not inspected (no result, off); with no plan, all its dies were. A die list
before the first WaferID (1.2) or in the LotRecord (1.8) holds for every wafer that gives none of that kind.
Without any die list the wafer outline is unknown: an error.
A wafer inspected by several tests has the dies of all their plans and the defects of all their lists.
"""

from __future__ import annotations

import re

import numpy as np

from .common import FAIL, OFF, PASS, WaferMap, fail, grid_from_dies, normalise, notch_degrees

_GEO = ("SampleSize", "DiePitch", "SampleCenterLocation")
_TOKEN = re.compile(r'"[^"]*"|[{};,]|[^\s{};,"]+')
# the names read, by their lower case: tools differ in the case of KLARF keywords, readers ignore it
_NAMES = {k.lower(): k for k in (*_GEO, "LotID", "OrientationMarkLocation", "WaferID", "SampleTestPlan",
                                 "SampleDieMap", "DefectRecordSpec", "DefectList", "Record", "Field", "List",
                                 "Columns", "Data", "FileRecord", "LotRecord", "WaferRecord")}


def _name(tok: str) -> str:
    return _NAMES.get(tok.lower(), tok)


def looks_like(text: str) -> str | None:
    t = text.lstrip("\ufeff \t\r\n")
    if re.match(r"Record\s+FileRecord\b", t, re.I):
        return "klarf18"
    if re.match(r"FileVersion\s+1\s+[0-7]\s*;", t, re.I):
        return "klarf12"
    return None


def _tokens(text: str):
    """(token, line) pairs; quotes stripped from strings."""
    for n, line in enumerate(text.splitlines(), 1):
        for m in _TOKEN.finditer(line):
            tok = m.group(0)
            yield (tok[1:-1] if tok.startswith('"') else tok), n


class _Wafer:
    def __init__(self, wid: str, line: int, lot: str, notch, geo: dict, lot_dies: dict | None = None):
        self.wid, self.line, self.lot, self.notch, self.geo = wid, line, lot, notch, dict(geo)
        # die lists: the wafer's own, else the lot's (given before the first wafer / in the LotRecord)
        self.lot_dies = dict(lot_dies or {})
        self.plan: list[tuple[int, int]] | None = None      # SampleTestPlan: the inspected dies
        self.die_map: list[tuple[int, int]] | None = None   # SampleDieMap: every die of the wafer
        self.defects: list[tuple[int, int]] = []

    def dies(self, what: str) -> list[tuple[int, int]] | None:
        own = self.plan if what == "SampleTestPlan" else self.die_map
        return own if own is not None else self.lot_dies.get(what)

    def add(self, what: str, xy: list[int]) -> None:
        pairs = list(zip(xy[0::2], xy[1::2]))
        if what == "SampleTestPlan":  # one per InspectionTest: the wafer has them all
            self.plan = (self.plan or []) + pairs
        else:
            self.die_map = (self.die_map or []) + pairs


def _ints(vals, path, line, fld) -> list[int]:
    try:
        return [int(float(v)) for v in vals]
    except (ValueError, OverflowError):  # OverflowError: 'inf'
        raise fail(path, f"line {line}", f"field {fld}: non-numeric value in {' '.join(vals)[:40]!r}") from None


# ----------------------------------------------------------------------------------------------- KLARF 1.2

def _statements(text: str, path):
    """KLARF 1.2 statements: (keyword, [values], line of the keyword), split at ';'. A file cut short (its last
    statement open, or no ``EndOfFile``) is an error: read on, it would give a wafer of fewer dies, all passing."""
    cur, line, ended = [], 0, False
    for tok, n in _tokens(text):
        if tok == ";":
            if cur:
                ended = ended or cur[0].lower() == "endoffile"
                yield cur[0], cur[1:], line
            cur = []
            continue
        if not cur:
            line = n
        cur.append(tok)
    if cur and cur[0].lower() == "endoffile":
        return  # 'EndOfFile' without its ';' is still the end
    if cur:
        raise fail(path, f"line {line}", f"field {cur[0]}: statement not ended by ';' (the file is cut short)")
    if not ended:
        raise fail(path, f"line {line}", "field EndOfFile: missing (the file is cut short)")


def _read12(text: str, path) -> list[_Wafer]:
    wafers, lot, notch, spec, geo, lot_dies = [], "", ("0", 0), None, {}, {}
    for kw, vals, n in _statements(text, path):
        kw = _name(kw)
        if kw in _GEO:
            (wafers[-1].geo if wafers else geo)[kw] = vals
        elif kw == "LotID":
            lot = vals[0] if vals else ""
        elif kw == "OrientationMarkLocation":
            notch = (vals[0] if vals else "DOWN", n)
        elif kw == "WaferID":
            wafers.append(_Wafer(vals[0] if vals else str(len(wafers)), n, lot, notch, geo, lot_dies))
        elif kw in ("SampleTestPlan", "SampleDieMap"):
            xy = _ints(vals[1:], path, n, kw)
            if not vals or _ints(vals[:1], path, n, kw)[0] * 2 != len(xy):
                raise fail(path, f"line {n}", f"field {kw}: declares {vals[0] if vals else 'no'} dies, "
                                              f"lists {len(xy) / 2:g} (XINDEX YINDEX pairs)")
            if wafers:
                wafers[-1].add(kw, xy)
            else:  # before the first WaferID: the lot's, for every wafer that gives none
                lot_dies[kw] = lot_dies.get(kw, []) + list(zip(xy[0::2], xy[1::2]))
        elif kw == "DefectRecordSpec":
            spec = [v.upper() for v in vals[1:]]
        elif kw == "DefectList" and wafers:
            wafers[-1].defects += _defects12(vals, spec, path, n)  # every test's defects count
    return wafers


def _defects12(vals, spec, path, n) -> list[tuple[int, int]]:
    if not vals:
        return []
    if spec is None or "XINDEX" not in spec or "YINDEX" not in spec:
        raise fail(path, f"line {n}", "field DefectRecordSpec: needs XINDEX and YINDEX columns before DefectList")
    ix, iy = spec.index("XINDEX"), spec.index("YINDEX")
    # IMAGELIST (last column) holds IMAGECOUNT (number, type) pairs, so rows vary in length
    var = spec[-1] == "IMAGELIST" and "IMAGECOUNT" in spec
    fixed = len(spec) - 1 if var else len(spec)
    out, i = [], 0
    while i < len(vals):
        row = vals[i:i + fixed]
        if len(row) < fixed:
            raise fail(path, f"line {n}", f"field DefectList: last row has {len(row)} of {fixed} values "
                                          f"({' '.join(spec)})")
        i += fixed
        if var:
            i += 2 * _ints([row[spec.index("IMAGECOUNT")]], path, n, "IMAGECOUNT")[0]
        out.append(tuple(_ints([row[ix], row[iy]], path, n, "DefectList")))
    return out


# ----------------------------------------------------------------------------------------------- KLARF 1.8

_KINDS = {"Record", "Field", "List", "Columns", "Data"}


def _tree(text: str, path):
    """Nested (head tokens, children or None, line) from Record / Field / List / Columns / Data blocks. In a
    data row a braced value (an ImageList's ``Images 1 { "a.jpg" "JPG" 1 "24" }``) is one token of the row."""
    toks = list(_tokens(text))
    pos = 0

    def group() -> str:
        nonlocal pos
        depth, parts, line = 0, [], toks[pos][1]
        while pos < len(toks):
            tok = toks[pos][0]
            depth += (tok == "{") - (tok == "}")
            parts.append(tok)
            pos += 1
            if depth == 0:
                return " ".join(parts)
        raise fail(path, f"line {line}", "field '{': a braced value not closed (the file is cut short)")

    def block(opened=None):
        nonlocal pos
        items = []
        while pos < len(toks):
            tok, n = toks[pos]
            if tok == "}":
                pos += 1
                return items
            head = []
            while pos < len(toks):
                tok = toks[pos][0]
                if tok == "{" and head and _name(head[0]) not in _KINDS:
                    head.append(group())
                    continue
                if tok in ("{", "}", ";"):
                    break
                head.append(tok)
                pos += 1
            head[:2] = [_name(t) for t in head[:2]]  # kind (Record, List ...) and name (WaferRecord ...)
            if pos < len(toks) and toks[pos][0] == "{":
                if not head:
                    raise fail(path, f"line {n}", "field '{': a block without a Record/Field/List name before it")
                pos += 1
                items.append((head, block((" ".join(head[:3]), n)), n))
            else:
                if pos < len(toks) and toks[pos][0] == ";":
                    pos += 1
                if head:
                    items.append((head, None, n))
        if opened is not None:  # the tokens ran out inside a block: its '}' never came
            raise fail(path, f"line {opened[1]}", f"field {opened[0]}: block not closed by '}}' (the file is cut short)")
        return items

    return block()


def _walk18(items, path, wafers, lot="", notch=("DOWN", 0), geo=None, dies=None):
    geo = dict(geo or {})
    for head, kids, n in items:
        kind, name = head[0], (head[1] if len(head) > 1 else "")
        if kind == "Record" and kids is not None:
            rid = head[2] if len(head) > 2 else ""
            if name == "LotRecord":
                lot = rid
            fields = {h[1]: (k, ln) for h, k, ln in kids if h[0] == "Field" and len(h) > 1 and k is not None}
            here, mark = {**geo, **{k: _values(fields[k][0]) for k in _GEO if k in fields}}, notch
            if "OrientationMarkLocation" in fields:  # a record's fields hold for it and what it holds, not siblings
                v = [t for h, _, _ in fields["OrientationMarkLocation"][0] for t in h if t != ","]
                mark = (v[0] if v else "DOWN", fields["OrientationMarkLocation"][1])
            if name == "WaferRecord":
                w = _Wafer(rid or str(len(wafers)), n, lot, mark, here, dies)
                wafers.append(w)
                _wafer18(w, kids, path)
            else:  # a LotRecord's SampleTestPlan / SampleDieMap hold for its wafers that give none
                own = {}
                for h, k, ln in kids:
                    what = _die_list(h)
                    if what and k is not None:
                        xy = _xy18(h[0], h[1], k, path, ln)
                        own[what] = own.get(what, []) + list(zip(xy[0::2], xy[1::2]))
                _walk18(kids, path, wafers, lot, mark, here, {**(dies or {}), **own})


def _values(kids) -> list[str]:
    return [t for h, _, _ in kids for t in h if t != ","]


def _list_rows(kids, path, n, what) -> tuple[list[str], list[list[str]]]:
    """(column names, rows as one value per column) of a 1.8 List, its Data block's declared row count checked."""
    cols, types, rows = [], [], []
    for h, k, ln in kids:
        if h[0] == "Columns" and k is not None:
            vals = _values(k)
            cols = [vals[i].upper() for i in range(1, len(vals), 2)]  # 'int32 XINDEX, ...' -> names
            types = [vals[i].lower() for i in range(0, len(vals) - 1, 2)]
        elif h[0] == "Data" and k is not None:
            rows = [r for r, _, _ in k]
            declared = h[1] if len(h) > 1 else None
            if declared is not None and _ints([declared], path, ln, what)[0] != len(rows):
                raise fail(path, f"line {ln}", f"field {what}: Data declares {declared} rows, its block holds "
                                               f"{len(rows)} (the file is cut short?)")
    if not cols:
        raise fail(path, f"line {n}", f"field {what}: List has no Columns")
    return cols, [_row_values(r, types) for r in rows]


def _row_values(row: list[str], types: list[str]) -> list[str]:
    """One value per column: an ImageList value is 'Images N' and its braced list (_tree keeps it one token)."""
    if "imagelist" not in types:
        return row
    out, i = [], 0
    for t in types:
        if i >= len(row):
            break
        if t == "imagelist":
            j = next((j for j in range(i, len(row)) if row[j].startswith("{")), None)
            j = i if j is None or j - i > 2 else j  # 'N' (no images) stands alone
            out.append(" ".join(row[i:j + 1]))
            i = j + 1
        else:
            out.append(row[i])
            i += 1
    return out


def _xy_from_list(kids, path, n, what) -> list[tuple[int, int]]:
    cols, rows = _list_rows(kids, path, n, what)
    if "XINDEX" not in cols or "YINDEX" not in cols:
        raise fail(path, f"line {n}", f"field {what}: Columns lack XINDEX/YINDEX ({' '.join(cols)})")
    ix, iy = cols.index("XINDEX"), cols.index("YINDEX")
    return [tuple(_ints([r[ix], r[iy]], path, n, what)) for r in rows if len(r) > max(ix, iy)]


def _die_list(head) -> str | None:
    """'SampleTestPlan' / 'SampleDieMap' when a 1.8 List or Field is one (some tools suffix the name)."""
    name = head[1] if len(head) > 1 else ""
    return next((k for k in ("SampleTestPlan", "SampleDieMap") if name.startswith(k)), None)


def _xy18(kind: str, name: str, k, path, n) -> list[int]:
    """A die list as List (Columns XINDEX YINDEX) or Field (x y pairs), flattened."""
    if kind == "List":
        return [v for d in _xy_from_list(k, path, n, name) for v in d]
    return _ints(_values(k), path, n, name)


def _wafer18(w: _Wafer, kids, path) -> None:
    for head, k, n in kids:
        kind, name = head[0], (head[1] if len(head) > 1 else "")
        if kind == "List" and name == "DefectList" and k is not None:
            w.defects += _xy_from_list(k, path, n, "DefectList")
        elif _die_list(head) and k is not None:
            w.add(_die_list(head), _xy18(kind, name, k, path, n))  # several TestRecords: all their dies
        elif kind == "Record" and k is not None:  # e.g. a TestRecord holding the plan
            _wafer18(w, k, path)


# ------------------------------------------------------------------------------------------------- result

def read(data: bytes, path, version: str) -> list[WaferMap]:
    text = data.decode("utf-8-sig", errors="replace")  # -sig: a BOM would hide the first keyword
    wafers = _read12(text, path) if version == "klarf12" else []
    if version == "klarf18":
        _walk18(_tree(text, path), path, wafers)
    if not wafers:
        raise fail(path, "line 1", "field WaferID: no wafer in this KLARF file")
    return [_map(w, k, path, version) for k, w in enumerate(wafers)]


def _frame(geo: dict):
    """(rows, cols, cx, cy) from SampleSize (shape code, diameter in mm), DiePitch (um) and SampleCenterLocation
    (um from die (0,0)'s origin); None when one is missing or odd. KLARF 1.8 files as tools write them give
    all three in nm, the diameter first (``SampleSize 2 {300000000, 0}``): told apart by that first value,
    which as a shape code is 1-3."""
    try:
        size = [float(v) for v in geo["SampleSize"][:2]]
        nm = size[0] > 1000  # a diameter, not a shape code
        diameter = size[0] if nm else size[1] * 1000.0  # um, or nm for an nm file (only ratios matter below)
        px, py = (float(v) for v in geo["DiePitch"][:2])
        sx, sy = (float(v) for v in geo["SampleCenterLocation"][:2])
    except (KeyError, IndexError, ValueError):
        return None
    if not np.isfinite([diameter, px, py, sx, sy]).all() or min(px, py, diameter) <= 0 \
            or diameter / min(px, py) > 4096:  # 'nan' would slip past the comparisons
        return None
    return round(diameter / py), round(diameter / px), int(np.floor(sx / px)), int(np.floor(sy / py))


def _map(w: _Wafer, k: int, path, version: str) -> WaferMap:
    die_map = w.dies("SampleDieMap") or []
    plan_list = w.dies("SampleTestPlan") or die_map  # only a die map: every die of it was inspected
    if not plan_list:
        raise fail(path, f"line {w.line} (wafer {w.wid})", "field SampleTestPlan: no die list (nor SampleDieMap), "
                                                           "so the wafer's dies (and its yield) are unknown")
    plan = np.array(plan_list, np.int64)
    bad = set(w.defects) - set(map(tuple, plan.tolist()))
    if bad:
        raise fail(path, f"line {w.line} (wafer {w.wid})", f"field DefectList: defect on die {sorted(bad)[0]} "
                                                           "outside the SampleTestPlan")
    hit = {tuple(d) for d in w.defects}
    values = np.array([FAIL if (x, y) in hit else PASS for x, y in plan.tolist()], np.uint8)
    # dies of the die map outside the plan: on the wafer, not inspected, so no result (off); they still
    # widen the grid to the wafer's die layout
    inspected = set(map(tuple, plan.tolist()))
    rest = np.array([d for d in dict.fromkeys(map(tuple, die_map)) if d not in inspected], np.int64).reshape(-1, 2)
    dies = np.concatenate([rest, plan])
    values = np.concatenate([np.full(len(rest), OFF, np.uint8), values])
    grid, how = grid_from_dies(dies[:, 0], dies[:, 1], values, x_right=True, y_down=False, frame=_frame(w.geo),
                               path=path, where=f"line {w.line} (wafer {w.wid})", fld="SampleTestPlan XINDEX/YINDEX")
    notch = notch_degrees(w.notch[0], path, f"line {w.notch[1]}", "OrientationMarkLocation")
    meta = {"orientation_deg": notch, "orientation_mark": w.notch[0], "defects": len(w.defects), "grid": how,
            "die_list": "SampleTestPlan" if w.dies("SampleTestPlan") else "SampleDieMap",
            "uninspected_dies": len(rest),
            "x_range": [int(plan[:, 0].min()), int(plan[:, 0].max())],
            "y_range": [int(plan[:, 1].min()), int(plan[:, 1].max())]}
    return WaferMap(normalise(grid, notch), w.wid, w.lot, version, str(path), k, meta)
