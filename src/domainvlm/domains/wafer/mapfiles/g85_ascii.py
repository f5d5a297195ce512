"""The older ASCII map form: SEMI G81 / E5 map data items as ``KEY:value`` lines, then one ``RowData:`` line
per map row (the layout KLA's SINF and many probers write)::

    DEVICE:PROD-1         LOT:L1234        WAFER:W01
    FNLOC:180             (notch/flat, degrees clockwise from the TOP as SINF counts: 180 = bottom)
    ORLOC:2               (origin location, kept)
    ROWCT:52  COLCT:52    (rows, columns)
    BCEQU:01 02           (bin codes that pass, space or comma separated; missing or blank: 01)
    NULBC:__              (null bin: no die at that site; '@@', SINF's uninspected die, counts as none, and so
                           do FD / FE (edge die) and FF (reference die) unless BCEQU or FAILBIN lists them)
    BINTYPE:HexaDecimal   (optional: HexaDecimal (default), Decimal or ASCII)
    RowData:__ __ 01 01 1F ...

ASCII codes are one character per die with no separators (as G85 / E142 write BinType ASCII), so a space in
such a row is a die site: the null bin when NULBC (or NULLBIN) is blank or ' ', or when no null bin is
declared and rows hold spaces; with no BINTYPE, one-character BCEQU codes and a space null say ASCII too.
Editors strip trailing spaces, so a row shorter than COLCT is padded with nulls; a longer one is an error.

Any header line after map rows starts the next wafer; keys it does not restate keep their values.
``FAILBIN:`` (optional) lists the fail codes; then any other code is an error rather than a fail.
Rows are drawn top to bottom.
"""

from __future__ import annotations

import re

import numpy as np

from .common import BinTable, WaferMap, bin_type, fail, make_table, normalise, notch_degrees, split_row

FMT = "g85-ascii"
_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[:=](.*)$")  # keys such as FNLOC, DEVICE2, REF1X
ALIASES = {"NULLBIN": "NULBC", "NULBIN": "NULBC"}  # G85's own word, as some text writers spell it
SPACE = ("", " ", "' '", '" "')  # NULBC values that declare a space (a lone space is lost to stripping)
_SEPARATED = re.compile(r"\S( \S)*")  # 'P P X': one-character codes with spaces between, not space nulls
KEYS = ("ROWCT", "COLCT", "ROWDATA")
SINF_OFF = ("FD", "FE", "FF")  # SINF's edge (FD, FE) and reference (FF) dies: off the product map


def looks_like(text: str) -> bool:
    keys = {m.group(1).upper() for line in text.splitlines()[:200] if (m := _LINE.match(line))}
    return {"ROWCT", "COLCT"} <= keys or "ROWDATA" in keys and bool(keys & {"WAFER", "BCEQU", "NULBC", "NULLBIN"})


def _blocks(text: str, path):
    """(header dict, [(line_no, row text)], first line) per wafer."""
    head, rows, start = {}, [], 1
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise fail(path, f"line {n}", f"expected KEY:value or RowData:..., got {line.strip()[:40]!r}")
        key, val = m.group(1).upper(), m.group(2)
        key = ALIASES.get(key, key)
        if key == "ROWDATA":  # as written: with space nulls every character counts, leading spaces too
            rows.append((n, val))
            continue
        if rows:  # a header line after map rows starts the next wafer (its LOT/DEVICE may precede WAFER);
            yield head, rows, start  # what it does not restate (a lot-wide BCEQU ...) holds as before
            head, rows, start = dict(head), [], n
        head[key] = (n, val.strip())
    if rows or head:
        yield head, rows, start


def _int(head, key, path) -> int | None:
    if key not in head:
        return None
    n, v = head[key]
    try:
        return int(v)
    except ValueError:
        raise fail(path, f"line {n}", f"field {key}: {v!r} is not an integer") from None


def _codes(head, key) -> list[str]:
    """A list of bin codes; SINF separates them by spaces or commas."""
    return [c for c in re.split(r"[\s,]+", head.get(key, (0, ""))[1]) if c]


def _spaced(text: str) -> bool:
    """A space among a row's codes; one space right after 'RowData:' may be the writer's separator."""
    return " " in (text[1:] if text[:1] == " " else text).rstrip()


def _space_rows(texts: list[str], n_cols: int | None) -> list[list[str]]:
    """Codes of one wafer's ASCII rows whose null bin is a space: one character per die, column by column."""
    if all(_SEPARATED.fullmatch(t.strip()) for t in texts) and any(" " in t.strip() for t in texts):
        return [t.split() for t in texts]  # 'P P X' throughout: spaces separate, a map of nulls between dies is none
    if n_cols is not None and all(t[:1] == " " for t in texts) and any(len(t) == n_cols + 1 for t in texts):
        texts = [t[1:] for t in texts]  # 'RowData: ' + codes: a row one too wide proves the separator
    if n_cols is not None:  # trailing nulls an editor stripped; a row wider than COLCT stays wrong
        texts = [t.ljust(n_cols) for t in texts]
    return [list(t) for t in texts]


def _one(head, rows, start, k, path, pass_bins, tables: list) -> WaferMap:
    where = f"line {start} (wafer {k})"
    if not rows:
        raise fail(path, where, "field RowData: no map rows")
    passes = _codes(head, "BCEQU")
    null = head.get("NULBC", (0, ""))[1]
    declared_space = "NULBC" in head and null in SPACE
    if "BINTYPE" not in head and declared_space and passes and all(len(c) == 1 for c in passes) \
            and any("  " in t.rstrip() or len(tok) % 2 for _, t in rows for tok in t.split()):
        btype = "ascii"  # one-character pass codes and a space null; blank runs or odd runs: no hex pairs
    else:
        btype = bin_type(head.get("BINTYPE", (0, "HexaDecimal"))[1], path, where)
    if not passes and btype == "ascii" and pass_bins is None:
        raise fail(path, where, "field BCEQU: missing, so pass dies cannot be told from fails (give pass_bins)")
    space = btype == "ascii" and (declared_space or "NULBC" not in head and any(_spaced(t) for _, t in rows))
    null = " " if space else null
    nulls = [null] if null else []
    nulls += ["@@"] if btype == "hexadecimal" else []  # uninspected: no result, so neither pass nor fail
    fails = _codes(head, "FAILBIN") if "FAILBIN" in head else None
    if btype == "hexadecimal":  # SINF: FD/FE edge and FF reference dies are no product dies, unless listed
        listed = {c.upper() for c in [*passes, *(fails or []), *map(str, pass_bins or [])]}
        nulls += [c for c in SINF_OFF if c not in listed]
    table = make_table(btype, passes or ["01"], fails, nulls, path, where, pass_bins)  # SINF: 01 when not given
    tables.append(table)
    n_rows, n_cols = _int(head, "ROWCT", path), _int(head, "COLCT", path)
    width = len(null) if null and btype != "ascii" else None
    spaced = _space_rows([t for _, t in rows], n_cols) if space else None
    grid = []
    for i, (n, text) in enumerate(rows):
        toks = spaced[i] if space else \
            split_row(text.replace(",", " ") if btype != "ascii" else text, btype, width)  # '01,01,__' too
        want = n_cols if n_cols is not None else (len(grid[0]) if grid else len(toks))
        if len(toks) != want:
            src = "COLCT" if n_cols is not None else "as in row 1"
            hint = "; the null bin is a space and editors strip trailing spaces: COLCT gives the row width" \
                if space and n_cols is None else ""
            raise fail(path, f"line {n} (RowData {i + 1})", f"field RowData: {len(toks)} bin codes, expected "
                                                             f"{want} ({src}){hint}")
        grid.append(table.classify(toks, path, f"line {n} (RowData {i + 1})"))
    if n_rows is not None and n_rows != len(grid):
        raise fail(path, where, f"field ROWCT: says {n_rows} but the map has {len(grid)} RowData lines")
    fn = head.get("FNLOC", (start, "bottom"))
    notch = notch_degrees(fn[1], path, f"line {fn[0]}", "FNLOC")
    if re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", fn[1]):  # SINF counts from the top (0 top, 90 right, 180 bottom)
        notch = (notch + 180) % 360
    meta = {"orientation_deg": notch, "fnloc": fn[1], "origin_location": head.get("ORLOC", (0, None))[1],
            "bin_type": btype, "null_bin": null, "pass_bins": sorted(map(str, table.pass_codes)),
            "product_id": head.get("DEVICE", (0, ""))[1]}
    wid = (head.get("WAFER") or head.get("WAFERID") or head.get("MID") or (0, str(k)))[1]
    return WaferMap(normalise(np.stack(grid), notch), wid, head.get("LOT", (0, ""))[1], FMT, str(path), k, meta)


def read(data: bytes, path, pass_bins=None) -> list[WaferMap]:
    text = data.decode("utf-8-sig", errors="replace")  # -sig: editors on Windows prepend a BOM
    tables: list = []
    maps = [_one(h, r, s, k, path, pass_bins, tables) for k, (h, r, s) in enumerate(_blocks(text, path))]
    merged = BinTable(tables[0].btype, set().union(*(t.pass_codes for t in tables)), None, set(),
                      seen={k: v for t in tables for k, v in t.seen.items()}) if tables and all(
                          t.fail_codes is None for t in tables) else None
    if merged is not None:  # over the whole file: one all-fail wafer of a lot may be real
        merged.check_pass_bins(pass_bins, path, f"all {len(maps)} wafer(s)")
    return maps
