"""SEMI E142 substrate maps (XML): ``<MapData><SubstrateMaps><SubstrateMap SubstrateId= Orientation=
OriginLocation= AxisDirection=><Overlay><BinCodeMap BinType= NullBin=><BinDefinitions><BinDefinition
BinCode= BinQuality=/>..</BinDefinitions><BinCode>row</BinCode>...``. One ``<SubstrateMap>`` per wafer.

``<BinCode>`` rows run from the origin corner along ``AxisDirection`` (e.g. LowerLeft + UpRight: the first
row is the bottom one). The grid is flipped to row 0 at the top, x to the right, then rotated so the notch
(``Orientation``, degrees clockwise from the bottom) is at the bottom; the originals stay in ``meta``.
"""

from __future__ import annotations

import numpy as np

from .common import WaferMap, bin_type, fail, make_table, normalise, notch_degrees, parse_xml, split_row

FMT = "e142"
_CORNERS = {"upperleft": (False, False), "upperright": (False, True), "lowerleft": (True, False),
            "lowerright": (True, True)}  # (first row is the bottom, first column is the right)


def _axes(sm, path, where) -> tuple[bool, bool]:
    origin = (sm.get("OriginLocation") or "UpperLeft").strip().lower().removeprefix("to")
    axis = (sm.get("AxisDirection") or "").strip().lower()
    if origin == "center":
        origin = "upperleft"  # rows still start at the top-left; the centre only numbers the dies
    if origin not in _CORNERS:
        raise fail(path, where, f"field OriginLocation: unknown value {sm.get('OriginLocation')!r}")
    bottom_first, right_first = _CORNERS[origin]
    if axis:  # the axis direction wins where it is stated: 'UpRight' = rows go upwards, columns rightwards
        if not any(v in axis for v in ("up", "down")) or not any(h in axis for h in ("left", "right")):
            raise fail(path, where, f"field AxisDirection: unknown value {sm.get('AxisDirection')!r}")
        bottom_first, right_first = "up" in axis, "left" in axis
    return bottom_first, right_first


def _one(sm, k: int, path, lots: dict, pass_bins) -> WaferMap:
    sid = sm.get("SubstrateId") or str(k)
    where = f"<SubstrateMap> {k} ({sid})"
    bcm = sm.find(".//BinCodeMap")
    if bcm is None:
        raise fail(path, where, "field BinCodeMap: missing <BinCodeMap>")
    btype = bin_type(bcm.get("BinType"), path, where)
    passes, fails = [], []
    for b in bcm.iter("BinDefinition"):
        if b.get("BinCode") is None:
            raise fail(path, where, "field BinCode: a <BinDefinition> has no BinCode")
        (passes if (b.get("BinQuality") or "").strip().lower() in ("pass", "good") else fails).append(b.get("BinCode"))
    if not passes and not fails and pass_bins is None:
        raise fail(path, where, "field BinDefinitions: none given, pass and fail dies cannot be told apart")
    if not passes and pass_bins is None:  # a tool's own BinQuality words, not a 0 % wafer
        qs = sorted({b.get("BinQuality") or "" for b in bcm.iter("BinDefinition")})
        raise fail(path, where, f"field BinQuality: no <BinDefinition> is Pass (values: {', '.join(map(repr, qs))}), "
                                f"so every die would fail; set DOMAINVLM_PASS_BINS to the pass bin codes")
    null = bcm.get("NullBin")
    table = make_table(btype, passes, fails, [null] if null is not None else [], path, where, pass_bins)
    width = len(null) if null and btype != "ascii" else None
    rows = bcm.findall("BinCode")
    if not rows:
        raise fail(path, where, "field BinCode: no <BinCode> rows")
    grid = []
    for i, r in enumerate(rows):
        toks = split_row(r.text or "", btype, width, null)
        if grid and len(toks) != len(grid[0]):
            raise fail(path, f"{where}, BinCode row {i + 1}",
                       f"field BinCode: {len(toks)} codes, expected {len(grid[0])} as in row 1")
        grid.append(table.classify(toks, path, f"{where}, BinCode row {i + 1}"))
    g = np.stack(grid)
    bottom_first, right_first = _axes(sm, path, where)
    g = g[::-1] if bottom_first else g
    g = g[:, ::-1] if right_first else g
    notch = notch_degrees(sm.get("Orientation"), path, where, "Orientation")
    meta = {"orientation_deg": notch, "origin_location": sm.get("OriginLocation"),
            "axis_direction": sm.get("AxisDirection"), "bin_type": btype, "null_bin": null,
            "pass_bins": sorted(map(str, table.pass_codes))}
    return WaferMap(normalise(g, notch), sid, lots.get(sid, ""), FMT, str(path), k, meta)


def read(data: bytes, path, pass_bins=None) -> list[WaferMap]:
    root = parse_xml(data, path)
    lots = {s.get("SubstrateId"): (s.findtext("LotId") or "").strip() for s in root.iter("Substrate")}
    sms = list(root.iter("SubstrateMap"))
    if not sms:
        raise fail(path, "<MapData>", "field SubstrateMap: no <SubstrateMap> element")
    return [_one(sm, k, path, lots, pass_bins) for k, sm in enumerate(sms)]
