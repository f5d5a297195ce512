"""Shared pieces of the fab map-file readers: the per-wafer result, bin-code conventions, orientation.

Every reader returns :class:`WaferMap` objects whose ``grid`` uses the project's die values (0 off-wafer,
1 pass, 2 fail) in ONE orientation: notch (or flat) at the bottom, row 0 at the top, x to the right. What the
file said (notch angle, origin corner, axis directions, bin table) is kept in ``meta`` so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ....errors import UserError

OFF, PASS, FAIL = 0, 1, 2
NOTCH_DEG = {"down": 0, "left": 90, "up": 180, "right": 270}  # clockwise from the bottom, as SEMI G85 counts
BIN_TYPES = ("ascii", "decimal", "hexadecimal", "integer2")


@dataclass
class WaferMap:
    grid: np.ndarray               # uint8 0/1/2, normalised orientation (see module docstring)
    wafer_id: str
    lot_id: str
    fmt: str                       # g85-xml | g85-ascii | e142 | stdf | klarf12 | klarf18
    path: str
    index: int                     # position in the file (the K of FILE#K)
    meta: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.path}#{self.index}"

    def counts(self) -> dict:
        g = self.grid
        n_pass, n_fail = int((g == PASS).sum()), int((g == FAIL).sum())
        return {"dies": n_pass + n_fail, "pass": n_pass, "fail": n_fail,
                "yield": round(n_pass / (n_pass + n_fail), 4) if n_pass + n_fail else 0.0}


def fail(path, where: str, what: str) -> UserError:
    """One-line error naming the file, the record/line and the field."""
    return UserError(f"{path}: {where}: {what}")


# ----------------------------------------------------------------------------------------------- bin codes

def bin_type(value: str | None, path, where: str) -> str:
    t = (value or "decimal").strip().lower().replace("-", "").replace("_", "")
    t = {"hex": "hexadecimal", "dec": "decimal", "int2": "integer2"}.get(t, t)
    if t not in BIN_TYPES:
        raise fail(path, where, f"field BinType: unknown value {value!r} (expected ASCII, Decimal, HexaDecimal "
                                f"or Integer2)")
    return t


def code_key(tok: str, btype: str, path, where: str, fld: str = "BinCode"):
    """Canonical value of a bin code, so '001', '1' (Decimal) and '0A', 'a' (HexaDecimal) compare equal."""
    tok = tok.strip()
    if btype == "ascii":
        if len(tok) != 1:
            raise fail(path, where, f"field {fld}: ASCII bin code {tok!r} must be one character")
        return tok
    try:
        return int(tok, 10 if btype == "decimal" else 16)
    except ValueError:
        raise fail(path, where, f"field {fld}: {tok!r} is not a {btype} bin code") from None


def split_row(text: str, btype: str, width: int | None = None, null: str | None = None) -> list[str]:
    """Codes of one map row: whitespace-separated, or fixed width (ASCII 1, HexaDecimal 2, Integer2 4). ASCII
    codes with a space for the null bin (``null`` ' '): every character is a code, spaces at the ends too."""
    text = text.strip("\r\n")
    if btype == "ascii" and null == " ":
        return list(text)
    if text.strip() and len(text.split()) > 1:
        return text.split()
    text = text.strip()
    w = width or {"ascii": 1, "hexadecimal": 2, "integer2": 4}.get(btype, 3)
    if btype == "ascii":
        return list(text)
    return [text[i:i + w] for i in range(0, len(text), w)]


@dataclass
class BinTable:
    """Pass / fail / null codes. ``fail_codes`` None: every non-null, non-pass code fails (SINF-style files
    list only the pass bins). A user-given ``pass_bins`` replaces the file's pass set."""
    btype: str
    pass_codes: set
    fail_codes: set | None
    null_codes: set
    written: tuple = ()  # (pass, fail, null) codes as the file writes them, for messages
    seen: dict = field(default_factory=dict)  # code -> as first written, met in the map's rows (check_pass_bins)

    def check_pass_bins(self, pass_bins, path, where: str) -> None:
        """Without a fail list (SINF) any non-pass code fails, so a user pass set naming no code of the map (a typo
        in DOMAINVLM_PASS_BINS) would give a wafer at 0 % yield, diagnosed Near-full: refuse it."""
        if pass_bins is None or self.fail_codes is not None or self.pass_codes & self.seen.keys() or not self.seen:
            return
        raise fail(path, where, f"field pass_bins (DOMAINVLM_PASS_BINS): none of {', '.join(map(str, pass_bins))} "
                                f"is a bin code of this file (its map rows hold "
                                f"{', '.join(sorted(self.seen.values()))})")

    def classify(self, tokens: list[str], path, where: str) -> np.ndarray:
        out = np.empty(len(tokens), np.uint8)
        cache: dict[str, int] = {}
        for j, tok in enumerate(tokens):
            v = cache.get(tok)
            if v is None:
                v = cache[tok] = self._one(tok, path, f"{where}, column {j + 1}")
            out[j] = v
        return out

    def _one(self, tok: str, path, where: str) -> int:
        if tok in self.null_codes:
            return OFF
        try:
            k = code_key(tok, self.btype, path, where)
        except UserError as e:
            if set(tok) <= set("_.@ -") and not self.null_codes & {tok}:  # '__' and the like: a null marker
                raise UserError(f"{e}; if {tok!r} marks sites without a die, declare it as the null bin "
                                f"(NULBC:{tok} in SINF, NullBin=\"{tok}\" in G85 XML)") from None
            raise
        if k in self.null_codes:
            return OFF
        self.seen.setdefault(k, tok)
        if k in self.pass_codes:
            return PASS
        if self.fail_codes is None or k in self.fail_codes:
            return FAIL
        known = ", ".join(dict.fromkeys([*self.written[0], *self.written[1]])) if self.written else \
            ", ".join(sorted(map(str, self.pass_codes | self.fail_codes)))
        nulls = ", ".join(dict.fromkeys(self.written[2])) if self.written else ""
        raise fail(path, where, f"field BinCode: unknown bin code {tok!r} (the file defines {known}; "
                                f"null bin {nulls or 'none'})")


def make_table(btype: str, pass_raw, fail_raw, null_raw, path, where: str, pass_bins=None) -> BinTable:
    keys = lambda xs: {code_key(str(x), btype, path, where) for x in xs}  # noqa: E731
    nulls = set()
    for n in null_raw:
        nulls.add(n)
        try:
            nulls.add(code_key(n, btype, path, where, "NullBin"))
        except UserError:
            pass  # a null marker such as '__' or '..' that is no valid code of this type
    passes = keys(pass_bins) if pass_bins is not None else keys(pass_raw)
    if pass_bins is not None and fail_raw is not None and not passes & (keys(pass_raw) | keys(fail_raw)):
        # a typo in DOMAINVLM_PASS_BINS would fail every die: a lot at 0 % yield, diagnosed Near-full
        raise fail(path, where, f"field pass_bins (DOMAINVLM_PASS_BINS): none of {', '.join(map(str, pass_bins))} "
                                f"is a bin of this file (it defines {', '.join(map(str, [*pass_raw, *fail_raw]))})")
    fails = None if fail_raw is None else keys(fail_raw) | (keys(pass_raw) - passes)
    return BinTable(btype, passes, fails, nulls,
                    tuple(list(map(str, x or ())) for x in (pass_raw, fail_raw, null_raw)))


# --------------------------------------------------------------------------------------------- orientation

def notch_degrees(value, path, where: str, fld: str) -> int:
    """A notch/flat position as degrees clockwise from the bottom: 0/90/180/270 or down/left/up/right."""
    s = str(value if value is not None else "0").strip().lower()
    s = {"d": "down", "l": "left", "u": "up", "r": "right", "bottom": "down", "top": "up", "": "down",
         " ": "down"}.get(s, s)
    if s in NOTCH_DEG:
        return NOTCH_DEG[s]
    try:
        deg = float(s)
    except ValueError:
        raise fail(path, where, f"field {fld}: unknown orientation {value!r}") from None
    if deg % 90:
        raise fail(path, where, f"field {fld}: orientation {value!r} is not a multiple of 90 degrees")
    return int(deg) % 360


def normalise(grid: np.ndarray, notch_deg: int) -> np.ndarray:
    """Rotate so the notch is at the bottom (np.rot90 turns counter-clockwise: a left notch moves down)."""
    return np.ascontiguousarray(np.rot90(grid, (notch_deg // 90) % 4))


MAX_SIDE = 4096  # dies per side: far above any wafer; a larger box is a stray coordinate, not a map


def grid_from_dies(xs, ys, values, x_right: bool = True, y_down: bool = True, frame=None, path="", where="",
                   fld="X/Y"):
    """Die grid from die coordinates; later duplicates win (retests). Returns (grid, how).

    ``frame=(rows, cols, cx, cy)``: the file states the wafer's size in dies and its centre die, so the map
    keeps its off-wafer border: the centre die sits at index (rows // 2, cols // 2) of the tool's view. Without
    a frame (or when a die falls outside it) the grid is the bounding box of the dies."""
    xs, ys = np.asarray(xs, np.int64), np.asarray(ys, np.int64)
    sx, sy = (1 if x_right else -1), (1 if y_down else -1)
    how = "bounding box"
    if frame is not None:
        n_rows, n_cols, cx, cy = frame
        cols, rows = (xs - cx) * sx + n_cols // 2, (ys - cy) * sy + n_rows // 2
        if n_rows > 0 and n_cols > 0 and cols.min() >= 0 and rows.min() >= 0 and cols.max() < n_cols \
                and rows.max() < n_rows:
            how = "wafer frame"
    if how != "wafer frame":
        cols, rows = (xs * sx) - (xs * sx).min(), (ys * sy) - (ys * sy).min()
        n_rows, n_cols = int(rows.max()) + 1, int(cols.max()) + 1
        if max(n_rows, n_cols) > MAX_SIDE:
            raise fail(path, where, f"field {fld}: the dies span {n_cols} x {n_rows} (x {xs.min()}..{xs.max()}, "
                                    f"y {ys.min()}..{ys.max()}), over {MAX_SIDE} a side: a stray coordinate?")
    g = np.zeros((int(n_rows), int(n_cols)), np.uint8)
    key = rows * g.shape[1] + cols
    _, first_from_end = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - first_from_end  # the last test of each die
    g[rows[last], cols[last]] = np.asarray(values, np.uint8)[last]
    return g, how


# --------------------------------------------------------------------------------------------------- XML

def parse_xml(data: bytes, path):
    """Root element with namespaces stripped. DTDs are refused: map files need none, and entities are how
    XML files expand or reach outside themselves."""
    import xml.etree.ElementTree as ET

    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise fail(path, "XML", "DTD/entity declarations are not accepted in map files")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise fail(path, f"line {e.position[0]}", f"not well-formed XML ({e})") from None
    except LookupError as e:  # <?xml encoding="..."?> names a codec Python lacks
        raise fail(path, "line 1", f"field encoding: {e}") from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]
        for k in [k for k in el.attrib if "}" in k]:
            el.attrib[k.rsplit("}", 1)[1]] = el.attrib.pop(k)
    return root


def xml_root_name(head: bytes) -> str | None:
    """Local name of the first element in the first bytes of a file (None if it does not look like XML)."""
    import re

    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("<"):
        return None
    text = re.sub(r"<!--.*?(-->|$)|<\?.*?(\?>|$)", "", text, flags=re.S)  # comments may hold '<Tool>'
    for m in re.finditer(r"<([A-Za-z_][\w.:-]*)", text):
        return m.group(1).rsplit(":", 1)[-1]
    return None
