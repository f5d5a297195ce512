"""SEMI G85 map files, XML form: ``<Maps><Map WaferId=..><Device Rows= Columns= Orientation= OriginLocation=
BinType= NullBin=><Bin BinCode= BinQuality=Pass|Fail/>...<Data><Row>codes</Row>...``. One ``<Map>`` per wafer.

Rows are the map as drawn (first ``<Row>`` at the top, as G85 prints it); ``OriginLocation`` (0 centre,
1 lower-left, 2 lower-right, 3 upper-right, 4 upper-left) numbers the dies and is kept in ``meta``.
``Orientation`` is the notch angle in degrees clockwise from the bottom; the grid is rotated so it is 0.
"""

from __future__ import annotations

import numpy as np

from .common import WaferMap, bin_type, fail, make_table, normalise, notch_degrees, parse_xml, split_row

FMT = "g85-xml"


def _int(dev, name: str, path, where: str) -> int | None:
    v = dev.get(name)
    if v is None or not v.strip():
        return None
    try:
        return int(v)
    except ValueError:
        raise fail(path, where, f"field {name}: {v!r} is not an integer") from None


def _bins(dev, btype, path, where, pass_bins):
    passes, fails = [], []
    for b in dev.iter("Bin"):
        code, q = b.get("BinCode"), (b.get("BinQuality") or "").strip().lower()
        if code is None:
            raise fail(path, where, "field BinCode: a <Bin> has no BinCode")
        (passes if q in ("pass", "good") else fails).append(code)
    if not passes and not fails and pass_bins is None:
        raise fail(path, where, "field Bin: no <Bin> definitions, so pass and fail dies cannot be told apart "
                                "(give pass_bins)")
    if not passes and pass_bins is None:  # e.g. BinQuality="BIN1": a tool's own words, not a 0 % wafer
        qs = sorted({b.get("BinQuality") or "" for b in dev.iter("Bin")})
        raise fail(path, where, f"field BinQuality: no <Bin> is Pass (values: {', '.join(map(repr, qs))}), so "
                                f"every die would fail; set DOMAINVLM_PASS_BINS to the pass bin codes")
    null = dev.get("NullBin")
    return make_table(btype, passes, fails, [null] if null is not None else [], path, where, pass_bins)


def _one(m, k: int, path, pass_bins) -> WaferMap:
    where = f"<Map> {k}"
    dev = m.find("Device")
    if dev is None:
        raise fail(path, where, "field Device: missing <Device> element")
    btype = bin_type(dev.get("BinType"), path, where)
    table = _bins(dev, btype, path, where, pass_bins)
    rows_el = [r for d in dev.iter("Data") for r in d.iter("Row")]
    if not rows_el:
        raise fail(path, where, "field Row: no <Data><Row> elements")
    n_rows, n_cols = _int(dev, "Rows", path, where), _int(dev, "Columns", path, where)
    width = len(dev.get("NullBin") or "") if btype == "decimal" and dev.get("NullBin") else None
    grid = []
    for i, r in enumerate(rows_el):
        toks = split_row(r.text or "", btype, width, dev.get("NullBin"))
        want = n_cols if n_cols is not None else (len(grid[0]) if grid else len(toks))
        if len(toks) != want:
            raise fail(path, f"{where}, Row {i + 1}", f"field Row: {len(toks)} bin codes, expected {want} "
                                                      f"({'Columns' if n_cols is not None else 'as in Row 1'})")
        grid.append(table.classify(toks, path, f"{where}, Row {i + 1}"))
    if n_rows is not None and n_rows != len(grid):
        raise fail(path, where, f"field Rows: says {n_rows} but the map has {len(grid)} <Row> elements")
    notch = notch_degrees(dev.get("Orientation"), path, where, "Orientation")
    meta = {"orientation_deg": notch, "origin_location": dev.get("OriginLocation"), "bin_type": btype,
            "null_bin": dev.get("NullBin"), "format_revision": m.get("FormatRevision"),
            "product_id": dev.get("ProductId"), "pass_bins": sorted(map(str, table.pass_codes))}
    return WaferMap(normalise(np.stack(grid), notch), m.get("WaferId") or str(k), dev.get("LotId") or "",
                    FMT, str(path), k, meta)


def read(data: bytes, path, pass_bins=None) -> list[WaferMap]:
    root = parse_xml(data, path)
    maps = [root] if root.tag == "Map" else list(root.iter("Map"))
    if not maps:
        raise fail(path, "<Maps>", "field Map: no <Map> element")
    return [_one(m, k, path, pass_bins) for k, m in enumerate(maps)]
