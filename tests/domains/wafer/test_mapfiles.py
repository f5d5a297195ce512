"""Fab wafer-map files (SEMI G85 XML / ASCII, SEMI E142, STDF V4, KLARF 1.2 / 1.8): readers, conventions,
multi-wafer files, bad input. Files come from tests/mapfile_writers.py (STDF through Semi-ATE-STDF)."""

from __future__ import annotations

import numpy as np
import pytest

import mapfile_writers as W
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.domains.wafer import mapfiles as MF
from domainvlm.errors import UserError


def grids(n=3, size=26, seed=0):
    rng = np.random.default_rng(seed)
    pats = [("Center",), ("Scratch", "Edge-Loc"), ("Donut",), (), ("Loc",)]
    return [synth_map(pats[i % len(pats)], size, rng) for i in range(n)]


def write(tmp_path, name, content) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


# (file name, writer call, format): one case per convention the readers must handle
CASES = [
    ("g85_dec.xml", lambda g: W.g85_xml(g, "Decimal", 0), "g85-xml"),
    ("g85_hex_left.xml", lambda g: W.g85_xml(g, "HexaDecimal", 90), "g85-xml"),
    ("g85_ascii_up.xml", lambda g: W.g85_xml(g, "ASCII", 180), "g85-xml"),
    ("g85_text_right.map", lambda g: W.g85_ascii(g, 270), "g85-ascii"),
    ("e142_hex_lowerleft.xml", lambda g: W.e142_xml(g, "HexaDecimal", 0, "LowerLeft", "UpRight"), "e142"),
    ("e142_int2_upperright.xml", lambda g: W.e142_xml(g, "Integer2", 90, "UpperRight", "DownLeft"), "e142"),
    ("le_flag.stdf", lambda g: W.stdf_bytes(g, "<", "D", "R", "D"), "stdf"),
    ("be_left_up.stdf", lambda g: W.stdf_bytes(g, ">", "L", "L", "U"), "stdf"),
    ("hardbins_retest.stdf", lambda g: W.stdf_bytes(g, "<", "U", use_flag=False, retest=True), "stdf"),
    ("k12_down.000", lambda g: W.klarf12(g, "DOWN"), "klarf12"),
    ("k12_right.000", lambda g: W.klarf12(g, "RIGHT"), "klarf12"),
    ("k18_left.klarf", lambda g: W.klarf18(g, "LEFT"), "klarf18"),
]


@pytest.mark.parametrize("name,make,fmt", CASES, ids=[c[0] for c in CASES])
def test_each_convention_gives_the_exact_grids_one_per_wafer(tmp_path, name, make, fmt):
    gs = grids(3)
    path = write(tmp_path, name, make(gs))
    assert MF.sniff(path) == fmt
    maps = MF.read_maps(path)
    assert [m.index for m in maps] == [0, 1, 2] and len({m.wafer_id for m in maps}) == 3
    for m, g in zip(maps, gs):
        assert m.fmt == fmt and m.grid.dtype == np.uint8
        np.testing.assert_array_equal(m.grid, g)  # orientation, origin, bins and frame all undone
        assert m.counts()["fail"] == int((g == 2).sum())
        assert "orientation_deg" in m.meta  # the file's own orientation is kept
    assert MF.get_wafer(path, 2).wafer_id == maps[2].wafer_id


def test_originals_are_kept_in_meta(tmp_path):
    p = write(tmp_path, "e.xml", W.e142_xml(grids(1), "HexaDecimal", 90, "LowerLeft", "UpRight"))
    m = MF.read_maps(p)[0]
    assert m.meta["orientation_deg"] == 90 and m.meta["origin_location"] == "LowerLeft"
    assert m.meta["axis_direction"] == "UpRight" and m.lot_id == "LOT7"
    s = MF.read_maps(write(tmp_path, "s.stdf", W.stdf_bytes(grids(1), ">", "L", "L", "U")))[0]
    assert (s.meta["wf_flat"], s.meta["pos_x"], s.meta["pos_y"], s.meta["grid"]) == ("L", "L", "U", "wafer frame")


def test_stdf_without_wafer_frame_uses_the_dies_bounding_box(tmp_path):
    g = grids(1)[0]
    m = MF.read_maps(write(tmp_path, "s.stdf", W.stdf_bytes([g], frame=False)))[0]
    rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
    np.testing.assert_array_equal(m.grid, g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    assert m.meta["grid"] == "bounding box"


def test_pass_bins_override(tmp_path):
    g = grids(1)[0]
    p = write(tmp_path, "g.xml", W.g85_xml([g], "Decimal", seed=3))
    m = MF.read_maps(p, pass_bins=["1", "7"])[0]  # '001' and '007' pass now, the other fail bins still fail
    assert (m.grid == 1).sum() > (g == 1).sum() and (m.grid == 2).sum() > 0
    assert set(np.flatnonzero(g.ravel() == 1)) <= set(np.flatnonzero(m.grid.ravel() == 1))
    s = write(tmp_path, "s.stdf", W.stdf_bytes([g], seed=1))
    assert (MF.read_maps(s, pass_bins=[1, 3, 5, 9])[0].grid == 2).sum() == 0  # every hard bin passes
    np.testing.assert_array_equal(MF.read_maps(s, pass_bins=[1])[0].grid, g)


def test_sniff_leaves_other_files_alone(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    np.savez(tmp_path / "b.npz", arr_0=np.zeros((1, 2, 2)))
    (tmp_path / "c.xml").write_text('<?xml version="1.0"?><eCitation><meta/></eCitation>')
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n')
    assert [MF.sniff(tmp_path / n) for n in ("a.png", "b.npz", "c.xml", "d.jsonl", "missing")] == [None] * 5
    from domainvlm.data.sources import sniff

    assert sniff(tmp_path / "c.xml") == "xml"  # an X-ray report XML still goes to its own loader


# ------------------------------------------------------------------------------------------------ bad input

def _err(path, **kw) -> str:
    with pytest.raises(UserError) as e:
        MF.read_maps(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_truncated_stdf_names_the_record_and_field(tmp_path):
    data = W.stdf_bytes(grids(1))
    msg = _err(write(tmp_path, "t.stdf", data[:len(data) // 2 + 3]))
    assert "record" in msg and "at byte" in msg and "REC_LEN" in msg and "truncated" in msg


def test_g85_row_of_unequal_length(tmp_path):
    g = grids(1)[0]
    bad = " ".join(["001"] * (g.shape[1] - 2))
    msg = _err(write(tmp_path, "g.xml", W.g85_xml([g], rows_override={4: bad})))
    assert "Row 5" in msg and "field Row" in msg and f"expected {g.shape[1]}" in msg


def test_g85_ascii_row_of_unequal_length_names_the_line(tmp_path):
    text = W.g85_ascii(grids(1)).splitlines()
    i = next(j for j, t in enumerate(text) if t.startswith("RowData:")) + 3
    text[i] = text[i].rsplit(" ", 1)[0]
    msg = _err(write(tmp_path, "g.map", "\n".join(text)))
    assert f"line {i + 1}" in msg and "field RowData" in msg


def test_unknown_bin_code(tmp_path):
    g = grids(1)[0]
    row = ["255"] * g.shape[1]
    row[3] = "042"  # no <Bin BinCode="042">
    msg = _err(write(tmp_path, "g.xml", W.g85_xml([g], rows_override={2: " ".join(row)})))
    assert "Row 3" in msg and "column 4" in msg and "field BinCode" in msg and "'042'" in msg


def test_klarf_without_die_list(tmp_path):
    msg = _err(write(tmp_path, "k.000", W.klarf12(grids(1), with_plan=False)))
    assert "line" in msg and "field SampleTestPlan" in msg and "LOT7-01" in msg


def test_klarf_cut_short_is_an_error_not_a_smaller_wafer(tmp_path):
    """Read on, a cut KLARF gave a wafer of fewer dies, all passing ('Normal'); each cut is one line naming it."""
    text = W.klarf12(grids(2))
    plan = text.index("SampleTestPlan")
    cuts = {"inside the die list": text.index("\n", plan + 200),
            "inside the defect list": text.index("\n", text.index("DefectList") + 40),
            "at a statement's end": text.index("SummaryList"),
            "before EndOfFile": text.index("EndOfFile")}
    for what, at in cuts.items():
        msg = _err(write(tmp_path, "k.000", text[:at]))
        assert "cut short" in msg and "line" in msg, what
    n = int(text[plan:].split()[1])  # the plan says n dies, one pair less follows
    fewer = text[:plan] + text[plan:].replace(f"SampleTestPlan {n}", f"SampleTestPlan {n + 1}", 1)
    assert "field SampleTestPlan: declares" in _err(write(tmp_path, "k.000", fewer))
    t18 = W.klarf18(grids(1))
    for at in (t18.index("List DefectList"), t18.index("          ", t18.index("List DefectList")) + 5):
        assert "cut short" in _err(write(tmp_path, "k.klarf", t18[:at]))
    data = t18.index("Data", t18.index("List DefectList"))
    n = int(t18[data:].split()[1])
    more = t18[:data] + t18[data:].replace(f"Data {n}", f"Data {n + 1}", 1)
    assert "Data declares" in _err(write(tmp_path, "k.klarf", more))


def test_klarf18_image_list_inside_a_defect_row(tmp_path):
    """KLA tools write IMAGEINFO mid-row (`Images 1 { ... }` then more columns): one defect, not two."""
    text = W.klarf18([np.full((3, 3), 1, np.uint8)])
    head = text[:text.index("      List DefectList")]
    text = head + """      List DefectList
      {
        Columns 10 { int32 DEFECTID, int32 XREL, int32 YREL, int32 XINDEX, int32 YINDEX, ImageList IMAGEINFO,
                     int32 POLARITY, float CRITICALAREA, int32 DBCLASS, int32 DBGROUP }
        Data 2
        {
          1 100 200 1 1 Images 1 { "1.000_00001.jpg" "JPG" 1 "24" } 0 0.0 1 -1 0;
          2 100 200 -1 -1 N 1 0.5 1 1;
        }
      }
    }
  }
}
EndOfFile;
"""
    m = MF.read_maps(write(tmp_path, "k.klarf", text))[0]
    assert m.meta["defects"] == 2 and m.counts()["fail"] == 2


def test_g85_ascii_codes_with_a_space_for_the_null_bin(tmp_path):
    """NullBin=" ": the off-wafer spaces at a row's ends were dropped ('Row 1: 0 bin codes, expected 26')."""
    import re

    g = grids(2)
    dotted = W.g85_xml(g, "ASCII")
    spaced = re.sub(r"<Row>(.*?)</Row>", lambda m: "<Row>" + m.group(1).replace(".", " ") + "</Row>",
                    dotted.replace('NullBin="."', 'NullBin=" "'))
    assert 'NullBin=" "' in spaced and "CDATA[  " in spaced
    want = [m.grid for m in MF.read_maps(write(tmp_path, "dot.xml", dotted))]
    got = [m.grid for m in MF.read_maps(write(tmp_path, "space.xml", spaced))]
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_klarf18_geometry_in_nm_as_tools_write_it(tmp_path):
    """Real 1.8 files give SampleSize {diameter nm, 0} and pitches in nm: read as mm / um they had no frame."""
    import re

    text = W.klarf18(grids(1))
    nums = lambda name: [float(v) for v in re.search(name + r" 2 \{([^}]*)\}", text).group(1).split(",")]  # noqa: E731
    (_, d), (px, py), (sx, sy) = nums("SampleSize"), nums("DiePitch"), nums("SampleCenterLocation")
    nm = re.sub(r"SampleSize 2 \{[^}]*\}", f"SampleSize 2 {{{d * 1e6:.0f}, 0}}", text)
    nm = re.sub(r"DiePitch 2 \{[^}]*\}", f"DiePitch 2 {{{px * 1e3:.0f}, {py * 1e3:.0f}}}", nm)
    nm = re.sub(r"SampleCenterLocation 2 \{[^}]*\}", f"SampleCenterLocation 2 {{{sx * 1e3:.0f}, {sy * 1e3:.0f}}}", nm)
    a, b = (MF.read_maps(write(tmp_path, f"{n}.klarf", t))[0] for n, t in (("um", text), ("nm", nm)))
    assert a.meta["grid"] == b.meta["grid"] and a.meta["grid"].startswith("wafer frame")
    np.testing.assert_array_equal(a.grid, b.grid)


def test_g85_ascii_header_keys_with_digits(tmp_path):
    """A key such as REF1X (tools add their own) stopped the file: 'expected KEY:value'."""
    g = grids(1)
    text = W.g85_ascii(g, 0)
    extra = text.replace("DUTMS:mm", "DUTMS:mm\nREF1X:3\nTOOL2ID:P12", 1)
    assert "REF1X:3" in extra
    np.testing.assert_array_equal(MF.read_maps(write(tmp_path, "a.map", extra))[0].grid,
                                  MF.read_maps(write(tmp_path, "b.map", text))[0].grid)


def test_index_beyond_the_files_wafers(tmp_path):
    p = write(tmp_path, "g.xml", W.g85_xml(grids(2)))
    with pytest.raises(UserError, match=r"g\.xml#5: field #K: index out of range \(the file holds 2 wafers"):
        MF.get_wafer(p, 5)
    with pytest.raises(UserError, match="holds 2 wafers; pick one"):
        MF.get_wafer(p, None)


def test_xml_with_entities_is_refused(tmp_path):
    bomb = '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><Maps><Map WaferId="&a;"/></Maps>'
    assert "DTD/entity" in _err(write(tmp_path, "b.xml", bomb))


def test_klarf18_plan_as_field_in_a_test_record_and_image_lists(tmp_path):
    text = '''Record FileRecord "1.8"
{
  Record LotRecord "L9"
  {
    Record WaferRecord "W9"
    {
      Field OrientationMarkLocation 1 {"DOWN"}
      Record TestRecord 1
      {
        Field SampleTestPlan 4 {0 0, 1 0, 0 1, 1 1}
      }
      List DefectList
      {
        Columns 4 { int32 DEFECTID, int32 XINDEX, int32 YINDEX, ImageList IMAGEINFO }
        Data 2
        {
          1 1 1 Images 1 { "d1.tif" "TIFF" 1 "0" };
          2 0 0 N;
        }
      }
    }
  }
}
EndOfFile;
'''
    m = MF.read_maps(write(tmp_path, "k.klarf", text))[0]
    assert (m.wafer_id, m.lot_id, m.meta["grid"]) == ("W9", "L9", "bounding box")
    np.testing.assert_array_equal(m.grid, [[1, 2], [2, 1]])  # y grows upwards: row 0 is y = 1


def test_pass_bins_from_the_environment(tmp_path, monkeypatch):
    g = grids(1)[0]
    s = write(tmp_path, "s.stdf", W.stdf_bytes([g], seed=1))
    assert MF.get_wafer(s, 0).counts()["fail"] == int((g == 2).sum())
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", "1,3,5,9")
    assert MF.get_wafer(s, 0).counts()["fail"] == 0


def test_pass_bins_none_of_which_the_file_has_is_an_error(tmp_path, monkeypatch):
    """A typo in DOMAINVLM_PASS_BINS failed every die silently: 0 % yield, diagnosed Near-full."""
    g = grids(1)[0]
    files = [write(tmp_path, "s.stdf", W.stdf_bytes([g], seed=1)), write(tmp_path, "e.xml", W.e142_xml([g])),
             write(tmp_path, "g.xml", W.g85_xml([g]))]
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", "98")  # no file here has bin 98
    for f in files:
        assert "none of 98 is a" in _err(f)


def _record_ends(data: bytes) -> list[tuple[int, tuple[int, int]]]:
    """(end offset, (REC_TYP, REC_SUB)) of every record of a little-endian STDF file."""
    out, pos = [], 0
    while pos < len(data):
        key = (data[pos + 2], data[pos + 3])
        pos += 4 + int.from_bytes(data[pos:pos + 2], "little")
        out.append((pos, key))
    return out


def test_stdf_cut_at_a_record_boundary_is_an_error(tmp_path):
    """Cut between two records, an STDF file read as a smaller wafer with no word of it."""
    two = W.stdf_bytes(grids(2), seed=1)
    msg = _err(write(tmp_path, "s.stdf", two[:_record_ends(two)[150][0]]))  # inside wafer 1
    assert "field MRR: missing" in msg and "wafer W01 has no WRR" in msg and "cut short" in msg
    one = W.stdf_bytes(grids(1), with_wir=False)
    msg = _err(write(tmp_path, "n.stdf", one[:_record_ends(one)[150][0]]))
    assert "field MRR: missing" in msg and "no WRR/MRR" in msg
    last_wrr = max(end for end, key in _record_ends(two) if key == (2, 20))  # both wafers whole: still read
    assert len(MF.read_maps(write(tmp_path, "w.stdf", two[:last_wrr]))) == 2


def test_stdf_without_wir_is_one_wafer(tmp_path):
    g = grids(1)[0]
    maps = MF.read_maps(write(tmp_path, "s.stdf", W.stdf_bytes([g], with_wir=False)))
    assert len(maps) == 1 and maps[0].wafer_id == "0"
    np.testing.assert_array_equal(maps[0].grid, g)
