"""Independent writers of fab map files for tests, laid out as the SEMI specs / tools show them.

They know nothing of the readers: each takes die grids (0 off-wafer / 1 pass / 2 fail, notch at the bottom,
row 0 at the top) and writes the file as a tool would, with the chosen notch position, origin and bin codes.
STDF goes through Semi-ATE-STDF's record classes (MIT), an independent implementation of the V4 layout.
"""

from __future__ import annotations

import numpy as np

ROT = {"down": 0, "left": 90, "up": 180, "right": 270}


def as_written(grid: np.ndarray, notch_deg: int) -> np.ndarray:
    """The grid as the tool sees it when the notch sits at ``notch_deg`` (clockwise from the bottom)."""
    return np.rot90(grid, -(notch_deg // 90))


def _codes(grid, pass_code, fail_codes, null_code, rng):
    out = np.empty(grid.shape, object)
    out[grid == 0] = null_code
    out[grid == 1] = pass_code
    fails = np.flatnonzero(grid.ravel() == 2)
    picks = rng.integers(0, len(fail_codes), len(fails)) if len(fails) else []
    flat = out.ravel()
    for i, j in zip(fails, picks):
        flat[i] = fail_codes[j]
    return out


def g85_xml(grids, bin_type="Decimal", notch_deg=0, seed=0, wafer_ids=None, rows_override=None) -> str:
    """SEMI G85 XML, one <Map> per grid; Decimal 3-digit, HexaDecimal 2-digit or ASCII 1-char codes."""
    rng = np.random.default_rng(seed)
    spec = {"Decimal": ("001", ["002", "007", "012", "099"], "255", " "),
            "HexaDecimal": ("01", ["0A", "1F", "2C"], "FF", " "),
            "ASCII": ("P", ["A", "B", "X"], ".", "")}[bin_type]
    pass_code, fail_codes, null, sep = spec
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<Maps>"]
    for k, g in enumerate(grids):
        w = as_written(np.asarray(g), notch_deg)
        codes = _codes(w, pass_code, fail_codes, null, rng)
        wid = wafer_ids[k] if wafer_ids else f"LOT7-{k + 1:02d}"
        out.append(f'  <Map xmlns:semi="http://www.semi.org" WaferId="{wid}" FormatRevision="G85-1101">')
        out.append(f'    <Device ProductId="PX9" LotId="LOT7" WaferSize="200" Rows="{w.shape[0]}" '
                   f'Columns="{w.shape[1]}" Orientation="{notch_deg}" OriginLocation="2" BinType="{bin_type}" '
                   f'NullBin="{null}">')
        out.append('      <ReferenceDevice ReferenceDeviceX="1" ReferenceDeviceY="1"/>')
        out.append(f'      <Bin BinCode="{pass_code}" BinQuality="Pass" BinCount="{int((w == 1).sum())}" '
                   'BinDescription="Good"/>')
        for c in fail_codes:
            out.append(f'      <Bin BinCode="{c}" BinQuality="Fail" BinDescription="Fail {c}"/>')
        out.append('      <Data MapName="Map" MapVersion="1">')
        for i, r in enumerate(codes):
            text = sep.join(r)
            if rows_override and i in rows_override:
                text = rows_override[i]
            out.append(f"        <Row><![CDATA[{text}]]></Row>")
        out += ["      </Data>", "    </Device>", "  </Map>"]
    out.append("</Maps>")
    return "\n".join(out) + "\n"


def g85_ascii(grids, notch_deg=0, seed=0) -> str:
    """The ASCII (G81/E5 data item, SINF-style) form: header lines, then RowData; pass 01/02, fails hex.
    FNLOC as KLA's SINF counts it: degrees clockwise from the top (180 = notch at the bottom)."""
    rng = np.random.default_rng(seed)
    lines = []
    for k, g in enumerate(grids):
        w = as_written(np.asarray(g), notch_deg)
        codes = _codes(w, "01", ["1A", "2B", "3C", "4D"], "__", rng)
        codes[(w == 1) & (rng.random(w.shape) < 0.3)] = "02"  # a second pass bin
        lines += ["DEVICE:PX9", "LOT:LOT7", f"WAFER:LOT7-{k + 1:02d}", f"FNLOC:{(notch_deg + 180) % 360}", "ORLOC:2",
                  f"ROWCT:{w.shape[0]}", f"COLCT:{w.shape[1]}", "BCEQU:01 02", "NULBC:__", "DUTMS:mm",
                  "XDIES:5.0", "YDIES:5.0"]
        lines += ["RowData:" + " ".join(r) for r in codes]
    return "\n".join(lines) + "\n"


def e142_xml(grids, bin_type="HexaDecimal", notch_deg=0, origin="LowerLeft", axis="UpRight", seed=0) -> str:
    """SEMI E142 MapData; HexaDecimal (2 hex digits) or Integer2 (4 hex digits) rows, from the origin corner."""
    rng = np.random.default_rng(seed)
    width = 2 if bin_type == "HexaDecimal" else 4
    pass_code, fail_codes, null = "1".zfill(width), [f"{c:0{width}X}" for c in (7, 12, 200)], "F" * width
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<MapData xmlns="urn:semi-org:xsd.E142-1.V1005.SubstrateMap">',
           '  <Layouts><Layout LayoutId="WaferLayout" DefaultUnits="mm" TopLevel="true"><Dimension X="1" Y="1"/>'
           '</Layout></Layouts>', "  <Substrates>"]
    for k in range(len(grids)):
        out.append(f'    <Substrate SubstrateType="Wafer" SubstrateId="W{k + 1:02d}"><LotId>LOT7</LotId></Substrate>')
    out += ["  </Substrates>", "  <SubstrateMaps>"]
    for k, g in enumerate(grids):
        w = as_written(np.asarray(g), notch_deg)
        if "Up" in axis:
            w = w[::-1]  # rows start at the bottom
        if "Left" in axis:
            w = w[:, ::-1]
        codes = _codes(w, pass_code, fail_codes, null, rng)
        out.append(f'    <SubstrateMap SubstrateType="Wafer" SubstrateId="W{k + 1:02d}" Orientation="{notch_deg}" '
                   f'OriginLocation="{origin}" AxisDirection="{axis}" LayoutSpecifier="WaferLayout/Devices">')
        out.append('      <Overlay MapName="SortGrade" MapVersion="1">')
        out.append(f'        <BinCodeMap BinType="{bin_type}" NullBin="{null}" MapType="2DArray">')
        out.append("          <BinDefinitions>")
        out.append(f'            <BinDefinition BinCode="{pass_code}" BinQuality="Pass" BinDescription="Good"/>')
        for c in fail_codes:
            out.append(f'            <BinDefinition BinCode="{c}" BinQuality="Fail" BinDescription="F{c}"/>')
        out.append("          </BinDefinitions>")
        out += [f"          <BinCode>{''.join(r)}</BinCode>" for r in codes]
        out += ["        </BinCodeMap>", "      </Overlay>", "    </SubstrateMap>"]
    out += ["  </SubstrateMaps>", "</MapData>"]
    return "\n".join(out) + "\n"


def _dies(g, y_up: bool, x_left: bool = False):
    """(x, y, value) of every on-wafer die; die (0, 0) is the one at index (h // 2, w // 2) of the picture."""
    h, w = g.shape
    ys, xs = np.nonzero(g)
    cx, cy = w // 2, h // 2
    yy = (cy - ys) if y_up else (ys - cy)
    xx = (cx - xs) if x_left else (xs - cx)
    return list(zip(xx.tolist(), yy.tolist(), g[ys, xs].tolist()))


def stdf_bytes(grids, endian="<", notch="D", pos_x="R", pos_y="D", use_flag=True, retest=False, seed=0,
               frame=True, with_wir=True) -> bytes:
    """STDF V4 written with Semi-ATE-STDF: FAR MIR WCR, per wafer WIR (PIR PRR)* WRR, then HBRs and MRR.

    frame: the WCR states the wafer diameter, die size and centre die (so the off-wafer border survives).
    use_flag False: PART_FLG says 'pass/fail invalid' (bit 4), so the reader must go by the hard bins."""
    import pytest

    pytest.importorskip("Semi_ATE.STDF", reason="pip install Semi-ATE-STDF (MIT) to write STDF test files")
    from Semi_ATE.STDF import FAR, HBR, MIR, MRR, PIR, PRR, WCR, WIR, WRR

    rng = np.random.default_rng(seed)
    rec = lambda r: r.__repr__()  # noqa: E731 - Semi-ATE packs a record in __repr__
    far = FAR(endian=endian)
    far.set_value("CPU_TYPE", 2 if endian == "<" else 1)
    out = [rec(far)]
    mir = MIR(endian=endian)
    mir.set_value("LOT_ID", "LOT7")
    mir.set_value("PART_TYP", "PX9")
    out.append(rec(mir))
    notch_deg = {"D": 0, "L": 90, "U": 180, "R": 270}[notch]
    h, w = as_written(np.asarray(grids[0]), notch_deg).shape
    wcr = WCR(endian=endian)
    for k, v in (("WF_FLAT", notch), ("POS_X", pos_x), ("POS_Y", pos_y), ("WF_UNITS", 3),
                 ("WAFR_SIZ", 4.0 * max(h, w)), ("DIE_HT", 4.0 * max(h, w) / h), ("DIE_WID", 4.0 * max(h, w) / w),
                 ("CENTER_X", 0), ("CENTER_Y", 0)):
        if frame or k not in ("WAFR_SIZ", "DIE_HT", "DIE_WID", "CENTER_X", "CENTER_Y"):
            wcr.set_value(k, v)
    out.append(rec(wcr))
    for k, g in enumerate(grids):
        w = as_written(np.asarray(g), notch_deg)
        wir = WIR(endian=endian)
        wir.set_value("HEAD_NUM", 1)
        wir.set_value("WAFER_ID", f"W{k + 1:02d}")
        out += [rec(wir)] if with_wir else []
        dies = _dies(w, y_up=pos_y == "U", x_left=pos_x == "L")
        if retest:  # every 7th die first fails, then passes on retest: the last result must win
            dies = [(x, y, 2) for x, y, v in dies[::7] if v == 1] + dies
        pir, prr = PIR(endian=endian), PRR(endian=endian)  # one object each, re-packed per die (speed)
        for key, val in (("HEAD_NUM", 1), ("SITE_NUM", 1)):
            pir.set_value(key, val)
            prr.set_value(key, val)
        pir_bytes = rec(pir)
        for x, y, v in dies:
            hard = 1 if v == 1 else int(rng.choice([3, 5, 9]))
            flag = (0 if v == 1 else 0x08) if use_flag else 0x10
            for key, val in (("PART_FLG", flag), ("HARD_BIN", hard), ("SOFT_BIN", hard), ("X_COORD", x),
                             ("Y_COORD", y)):
                prr.set_value(key, val)
            out += [pir_bytes, rec(prr)]
        wrr = WRR(endian=endian)
        wrr.set_value("HEAD_NUM", 1)
        wrr.set_value("WAFER_ID", f"W{k + 1:02d}")
        out += [rec(wrr)] if with_wir else []
    for b, pf in ((1, "P"), (3, "F"), (5, "F"), (9, "F")):
        hbr = HBR(endian=endian)
        for key, val in (("HEAD_NUM", 255), ("HBIN_NUM", b), ("HBIN_PF", pf), ("HBIN_NAM", f"bin{b}")):
            hbr.set_value(key, val)
        out.append(rec(hbr))
    out.append(rec(MRR(endian=endian)))
    return b"".join(out)


def _geo(g, deg):
    h, w = as_written(np.asarray(g), deg).shape
    return 5000.0 * max(h, w) / 1000.0, 5000.0 * max(h, w) / w, 5000.0 * max(h, w) / h


def klarf12(grids, notch="DOWN", with_plan=True) -> str:
    """KLARF 1.2: lot header, then per wafer WaferID, SampleTestPlan (all dies), DefectList (1-2 per fail die)."""
    deg = ROT[notch.lower()]
    lines = ["FileVersion 1 2;", "FileTimestamp 12-01-26 10:00:00;",
             'InspectionStationID "VENDOR" "MODEL" "TOOL1";', "SampleType WAFER;", 'LotID "LOT7";',
             'DeviceID "PX9";', 'StepID "M1";', "SampleOrientationMarkType NOTCH;",
             f"OrientationMarkLocation {notch};", "DieOrigin 0.0 0.0;"]
    diameter, px, py = _geo(grids[0], deg)
    lines += [f"SampleSize 1 {diameter:g};", f"DiePitch {px:.6e} {py:.6e};",
              f"SampleCenterLocation {px / 2:.3f} {py / 2:.3f};"]
    for k, g in enumerate(grids):
        w = as_written(np.asarray(g), deg)
        dies = _dies(w, y_up=True)
        lines += [f'WaferID "LOT7-{k + 1:02d}";', f"Slot {k + 1};", "InspectionTest 1;"]
        if with_plan:
            lines.append(f"SampleTestPlan {len(dies)}")
            lines += [f" {x} {y}" for x, y, _ in dies]
            lines[-1] += ";"
        lines.append("DefectRecordSpec 10 DEFECTID XREL YREL XINDEX YINDEX XSIZE YSIZE CLASSNUMBER IMAGECOUNT "
                     "IMAGELIST ;")
        lines.append("DefectList")
        n = 0
        for x, y, v in dies:
            for rep in range(1 + (abs(x + y) % 2) if v == 2 else 0):
                n += 1
                img = " 1 1 0" if n % 3 == 0 else " 0"  # IMAGECOUNT then (image, type) pairs
                lines.append(f" {n} {100.0 + rep:.1f} 220.5 {x} {y} 1.2 0.8 3{img}")
        lines[-1] += ";"
        lines += ["SummarySpec 5 TESTNO NDEFECT DEFDENSITY NDIE NDEFDIE ;", "SummaryList",
                  f" 1 {n} 0.01 {len(dies)} {sum(1 for d in dies if d[2] == 2)};"]
    lines.append("EndOfFile;")
    return "\n".join(lines) + "\n"


def klarf18(grids, notch="DOWN") -> str:
    """KLARF 1.8: FileRecord > LotRecord > WaferRecord with Fields, a SampleTestPlan List and a DefectList."""
    deg = ROT[notch.lower()]
    diameter, px, py = _geo(grids[0], deg)
    out = ['Record FileRecord "1.8"', "{", '  Field FileTimestamp 2 {"12-01-2026", "10:00:00"}',
           '  Record LotRecord "LOT7"', "  {", '    Field DeviceID 1 {"PX9"}',
           f'    Field OrientationMarkLocation 1 {{"{notch}"}}', f"    Field DiePitch 2 {{{px:g}, {py:g}}}",
           f"    Field SampleSize 2 {{1, {diameter:g}}}",
           f"    Field SampleCenterLocation 2 {{{px / 2:g}, {py / 2:g}}}"]
    for k, g in enumerate(grids):
        dies = _dies(as_written(np.asarray(g), deg), y_up=True)
        fails = [(x, y) for x, y, v in dies if v == 2]
        out += [f'    Record WaferRecord "LOT7-{k + 1:02d}"', "    {", f"      Field SlotNumber 1 {{{k + 1}}}",
                "      List SampleTestPlan", "      {", "        Columns 2 { int32 XINDEX, int32 YINDEX }",
                f"        Data {len(dies)}", "        {"]
        out += [f"          {x} {y};" for x, y, _ in dies]
        out += ["        }", "      }", "      List DefectList", "      {",
                "        Columns 6 { int32 DEFECTID, float XREL, float YREL, int32 XINDEX, int32 YINDEX, "
                "int32 CLASSNUMBER }", f"        Data {len(fails)}", "        {"]
        out += [f"          {i + 1} 120.5 300.0 {x} {y} 2;" for i, (x, y) in enumerate(fails)]
        out += ["        }", "      }", "    }"]
    out += ["  }", "}", "EndOfFile;"]
    return "\n".join(out) + "\n"
