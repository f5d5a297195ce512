"""Fab map files as tools write them beyond the writers' defaults: BOMs, multi-wafer headers, odd bin tables,
bad input. Each test pins a defect found by feeding such files to the readers and commands."""

from __future__ import annotations

import numpy as np
import pytest

import mapfile_writers as W
from domainvlm.domains.wafer import mapfiles as MF
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.errors import UserError


def grids(n=3, size=26, seed=0):
    rng = np.random.default_rng(seed)
    pats = [("Center",), ("Scratch",), ()]
    return [synth_map(pats[i % len(pats)], size, rng) for i in range(n)]


def write(tmp_path, name, content) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


@pytest.mark.parametrize("make", [lambda g: W.g85_ascii(g, 180), lambda g: W.klarf18(g, "RIGHT")],
                         ids=["g85-ascii", "klarf18"])
def test_text_files_with_a_bom_and_crlf(tmp_path, make):
    gs = grids()
    p = write(tmp_path, "bom.map", ("\ufeff" + make(gs)).replace("\n", "\r\n"))
    maps = MF.read_maps(p)
    assert len(maps) == 3
    for m, g in zip(maps, gs):
        np.testing.assert_array_equal(m.grid, g)


def test_g85_ascii_header_before_wafer_line_belongs_to_the_next_wafer(tmp_path):
    # SINF-style multi-wafer files repeat DEVICE / LOT before each WAFER line
    text = W.g85_ascii(grids()).split("DEVICE:PX9\nLOT:LOT7\n")
    text = "".join(f"DEVICE:PX{k}\nLOT:LOT{k}\n" + t for k, t in enumerate(text[1:]))
    maps = MF.read_maps(write(tmp_path, "lots.map", text))
    assert [(m.lot_id, m.meta["product_id"]) for m in maps] == [("LOT0", "PX0"), ("LOT1", "PX1"), ("LOT2", "PX2")]


def test_stdf_pass_bins_that_are_no_hard_bins_is_one_line(tmp_path, monkeypatch):
    s = write(tmp_path, "s.stdf", W.stdf_bytes(grids(1)))
    with pytest.raises(UserError, match=r"s\.stdf: pass_bins \(DOMAINVLM_PASS_BINS\): field HARD_BIN: 'P'"):
        MF.read_maps(s, pass_bins=["P"])
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", "1,P")
    with pytest.raises(UserError, match="field HARD_BIN"):
        MF.get_wafer(s, 0)


def test_pass_bins_from_the_environment_leave_klarf_files_readable(tmp_path, monkeypatch):
    # a lot folder mixes sort maps (for which the variable is set) and inspection results
    g = grids(1)[0]
    k = write(tmp_path, "k.000", W.klarf12([g]))
    monkeypatch.setenv("DOMAINVLM_PASS_BINS", "1")
    np.testing.assert_array_equal(MF.get_wafer(k, 0).grid, g)
    with pytest.raises(UserError, match="does not apply to KLARF"):
        MF.read_maps(k, pass_bins=["1"])  # given explicitly, it is a mistake


def test_lot_report_lists_map_files_that_do_not_read(tmp_path):
    import json

    from domainvlm.domains.wafer.lot_report import write_lot_report

    good = write(tmp_path, "a.xml", W.g85_xml(grids(1)))
    bad = write(tmp_path, "bad.map", W.g85_ascii(grids(1))[:-200])  # last rows cut short
    rows = [{"id": "a.xml#0", "image": f"{good}#0", "answer": "Diagnosis: Center"},
            {"id": "bad.map", "image": bad, "answer": None, "error": f"{bad}: line 30: ..."}]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = write_lot_report(pred, tmp_path / "rep", None)
    assert s["rows_not_wafer_maps"] == 0 and s["lots"]["LOT7"]["n_wafers"] == 1
    assert [b["image"] for b in s["unreadable_map_files"]] == [bad]
    md = (tmp_path / "rep" / "lot_report.md").read_text()
    assert "1 map file row(s) could not be read" in md and "bad.map: line" in md and "field RowData" in md


def _stdf_set_hbin_pf(data: bytes, pf: bytes) -> bytes:
    """Little-endian STDF with every HBR's HBIN_PF (body byte 8) replaced."""
    out, pos = bytearray(data), 0
    while pos < len(out):
        n = int.from_bytes(out[pos:pos + 2], "little")
        if tuple(out[pos + 2:pos + 4]) == (1, 40):
            out[pos + 4 + 8] = pf[0]
        pos += 4 + n
    return bytes(out)


def test_stdf_hbr_pass_flag_unknown_falls_back_to_bin_1(tmp_path):
    # PART_FLG marked invalid and the tester's HBRs say ' ' (pass/fail unknown): bin 1 passes, as documented
    g = grids(1)[0]
    p = write(tmp_path, "s.stdf", _stdf_set_hbin_pf(W.stdf_bytes([g], use_flag=False), b" "))
    np.testing.assert_array_equal(MF.read_maps(p)[0].grid, g)


def test_klarf12_defects_of_every_inspection_test_count(tmp_path):
    # a wafer inspected by two tests: each has its own SampleTestPlan and DefectList; a die fails on either
    g = grids(1)[0]
    head, rest = W.klarf12([g]).split("DefectList\n", 1)
    rows, tail = rest.split(";\n", 1)
    rows = rows.split("\n")
    plan = head[head.index("SampleTestPlan"):head.index("DefectRecordSpec")]
    spec = head[head.index("DefectRecordSpec"):]
    h = len(rows) // 2
    text = (head + "DefectList\n" + "\n".join(rows[:h]) + ";\nInspectionTest 2;\n" + plan + spec + "DefectList\n"
            + "\n".join(rows[h:]) + ";\n" + tail)
    np.testing.assert_array_equal(MF.read_maps(write(tmp_path, "k.000", text))[0].grid, g)


def test_klarf18_plans_and_defect_lists_of_several_tests(tmp_path):
    text = '''Record FileRecord "1.8"
{
  Record LotRecord "L9"
  {
    Record WaferRecord "W9"
    {
      Record TestRecord 1
      {
        Field SampleTestPlan 2 {0 0, 1 0}
      }
      Record TestRecord 2
      {
        Field SampleTestPlan 2 {0 1, 1 1}
      }
      List DefectList
      {
        Columns 3 { int32 DEFECTID, int32 XINDEX, int32 YINDEX }
        Data 1 { 1 1 1; }
      }
      List DefectList
      {
        Columns 3 { int32 DEFECTID, int32 XINDEX, int32 YINDEX }
        Data 1 { 2 0 0; }
      }
    }
  }
}
EndOfFile;
'''
    np.testing.assert_array_equal(MF.read_maps(write(tmp_path, "k.klarf", text))[0].grid, [[1, 2], [2, 1]])


def test_file_names_with_a_hash(tmp_path):
    from domainvlm.data.images import load_image
    from domainvlm.domains.wafer.mapfiles.labels import read_labelled
    from domainvlm.domains.wafer.render import render_map

    gs = grids(2)
    lot = write(tmp_path, "LOT#42.xml", W.g85_xml(gs))
    one = write(tmp_path, "W#3.xml", W.g85_xml(gs[:1]))
    assert np.array_equal(np.asarray(load_image(f"{lot}#1")), np.asarray(render_map(gs[1])))
    assert np.array_equal(np.asarray(load_image(one)), np.asarray(render_map(gs[0])))
    (tmp_path / "labels.csv").write_text("image,labels\nLOT#42.xml#1,Scratch\nW#3.xml,Center\n")
    rows = read_labelled(tmp_path / "labels.csv")
    assert [r[0].rsplit("/", 1)[1] for r in rows] == ["LOT#42.xml#1", "W#3.xml#0"]


def test_klarf18_block_without_a_name_is_one_line(tmp_path):
    text = W.klarf18(grids(1)).splitlines()
    i = next(j for j, t in enumerate(text) if "Field SlotNumber" in t)
    text[i] = "      { 1 }"  # the field's keyword and name lost
    with pytest.raises(UserError, match=rf"k\.klarf: line {i + 1}: field '{{': a block without a Record/Field/List"):
        MF.read_maps(write(tmp_path, "k.klarf", "\n".join(text)))


def test_stray_die_coordinate_is_one_line_not_a_huge_grid(tmp_path):
    g = grids(1)[0]
    text = W.klarf12([g])
    plan_end = text.index(";", text.index("SampleTestPlan"))
    far = text[:plan_end] + "\n 30000 0" + text[plan_end:]  # one die far off, as a corrupt plan row gives
    far = far.replace(f"SampleTestPlan {int((g > 0).sum())}", f"SampleTestPlan {int((g > 0).sum()) + 1}")
    far = far.replace("SampleSize 1", "SampleSize 0")  # no wafer frame: the dies' bounding box
    with pytest.raises(UserError, match=r"k\.000: line \d+ \(wafer LOT7-01\): field SampleTestPlan XINDEX/YINDEX: "
                                        r"the dies span 30\d\d\d x \d+ .*over 4096 a side"):
        MF.read_maps(write(tmp_path, "k.000", far))


def test_odd_numbers_and_encodings_are_one_line(tmp_path):
    inf = W.klarf12(grids(1)).replace("SampleTestPlan ", "SampleTestPlan inf ", 1).replace("\n 0 ", "\n inf ", 1)
    with pytest.raises(UserError, match=r"k\.000: line \d+: field SampleTestPlan: non-numeric"):
        MF.read_maps(write(tmp_path, "k.000", inf))
    xml = W.g85_xml(grids(1)).replace('encoding="utf-8"', 'encoding="ebcdic-xyz"')
    with pytest.raises(UserError, match=r"g\.xml: line 1: field encoding: unknown encoding"):
        MF.read_maps(write(tmp_path, "g.xml", xml))


@pytest.mark.parametrize("field", ["SampleSize 1 ", "DiePitch ", "SampleCenterLocation "])
def test_klarf_nan_in_the_wafer_geometry_falls_back_to_the_bounding_box(tmp_path, field):
    g = grids(1)[0]
    text = W.klarf12([g]).replace(field, field + "nan ", 1)
    m = MF.read_maps(write(tmp_path, "k.000", text))[0]
    rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
    assert m.meta["grid"] == "bounding box"
    np.testing.assert_array_equal(m.grid, g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def _sinf(rows, fnloc="180", bcequ="BCEQU:01", extra=()):
    head = ["DEVICE:PX9", "LOT:L1", "WAFER:L1-01", f"FNLOC:{fnloc}", f"ROWCT:{len(rows)}",
            f"COLCT:{len(rows[0].replace(',', ' ').split())}", bcequ, "NULBC:__", *extra]
    return "\n".join(head + ["RowData:" + r for r in rows]) + "\n"


# notch side marked by the fail column: the map as drawn with the notch where FNLOC says (KLA SINF: degrees
# clockwise from the top, 0 top, 90 right, 180 bottom, 270 left)
SINF_ROWS = ["__ 01 01", "01 01 01", "1F 1F 1F"]  # fails along the bottom edge as drawn
SINF_GRID = np.array([[0, 1, 1], [1, 1, 1], [2, 2, 2]], np.uint8)


@pytest.mark.parametrize("fnloc,turns", [("180", 0), ("0", 2), ("90", 3), ("270", 1)])
def test_sinf_fnloc_counts_from_the_top(tmp_path, fnloc, turns):
    m = MF.read_maps(write(tmp_path, "w.sinf", _sinf(SINF_ROWS, fnloc)))[0]
    # normalised: the notch side of the drawing ends at the bottom (np.rot90 turns counter-clockwise)
    np.testing.assert_array_equal(m.grid, np.rot90(SINF_GRID, turns))
    assert m.meta["fnloc"] == fnloc


@pytest.mark.parametrize("bcequ", ["BCEQU:01,02", "BCEQU:01, 02", "BCEQU:", ""], ids=["comma", "comma-space",
                                                                                     "blank", "missing"])
def test_sinf_bcequ_commas_and_default(tmp_path, bcequ):
    rows = ["__ 01 02", "01 @@ 01", "1F 1F 02"]
    m = MF.read_maps(write(tmp_path, "w.sinf", _sinf(rows, bcequ=bcequ)))[0]
    two = 1 if "02" in bcequ else 2  # without 02 in BCEQU only the SINF default 01 passes
    # '@@' (uninspected) has no result: no die counted there
    np.testing.assert_array_equal(m.grid, [[0, 1, two], [1, 0, 1], [2, 2, two]])


def test_chat_takes_a_map_file_wafer_as_an_image(tmp_path):
    from domainvlm.commands.chat import image_ref

    lot = write(tmp_path, "lot42.xml", W.g85_xml(grids(2)))
    hashed = write(tmp_path, "LOT#42.xml", W.g85_xml(grids(2)))
    assert image_ref(f"{lot}#1") == f"{lot}#1" and image_ref(f"'{hashed}#0'") == f"{hashed}#0"
    assert image_ref("what about wafer#3") is None  # still a question


def test_labels_csv_naming_one_wafer_twice_is_one_line(tmp_path):
    from domainvlm.domains.wafer.mapfiles.labels import read_labelled

    write(tmp_path, "one.xml", W.g85_xml(grids(1)))
    write(tmp_path, "lot.xml", W.g85_xml(grids(2)))
    (tmp_path / "labels.csv").write_text("image,labels,split\none.xml,Center,train\nlot.xml#1,Scratch,train\n"
                                         "one.xml#0,Center,val\n")
    with pytest.raises(UserError, match=r"labels\.csv:4: field 'image': one\.xml#0 is the same wafer as line 2"):
        read_labelled(tmp_path / "labels.csv")


def test_klarf18_a_wafer_records_fields_do_not_carry_over_to_the_next_wafer(tmp_path):
    g = grids(2)
    text = W.klarf18(g)  # the lot record says DOWN
    first = text.index('Record WaferRecord "LOT7-01"')
    brace = text.index("{", first) + 1
    text = text[:brace] + '\n      Field OrientationMarkLocation 1 {"UP"}' + text[brace:]  # wafer 1 only
    maps = MF.read_maps(write(tmp_path, "k.klarf", text))
    assert [m.meta["orientation_mark"] for m in maps] == ["UP", "DOWN"]
    np.testing.assert_array_equal(maps[1].grid, g[1])


def test_sinf_lot_header_given_once_holds_for_every_wafer(tmp_path):
    rows = ["__ 01 02", "01 02 1F"]
    text = _sinf(rows, bcequ="BCEQU:01 02") + "WAFER:L1-02\n" + "".join(f"RowData:{r}\n" for r in rows[::-1])
    maps = MF.read_maps(write(tmp_path, "lot.sinf", text))
    assert [m.wafer_id for m in maps] == ["L1-01", "L1-02"] and [m.lot_id for m in maps] == ["L1", "L1"]
    np.testing.assert_array_equal(maps[1].grid, [[1, 1, 2], [0, 1, 1]])  # 02 passes on wafer 2 as well


@pytest.mark.parametrize("make,fmt", [(lambda g: W.g85_ascii(g), "g85-ascii"), (lambda g: W.klarf12(g), "klarf12"),
                                      (lambda g: W.klarf18(g), "klarf18"),
                                      (lambda g: W.g85_xml(g).replace("utf-8", "utf-16"), "g85-xml")],
                         ids=["sinf", "klarf12", "klarf18", "g85-xml"])
def test_utf16_files_from_windows_tools(tmp_path, make, fmt):
    from domainvlm.domains.wafer.mapfiles.hooks import kind

    gs = grids(2)
    p = write(tmp_path, "w.txt", make(gs).replace("\n", "\r\n").encode("utf-16"))  # with a BOM, little-endian
    assert MF.sniff(p) == fmt and kind(p) == fmt
    for m, g in zip(MF.read_maps(p), gs):
        np.testing.assert_array_equal(m.grid, g)


@pytest.mark.parametrize("make,tag", [(lambda g: W.g85_xml(g), "Bin"), (lambda g: W.e142_xml(g), "BinDefinition")],
                         ids=["g85-xml", "e142"])
def test_no_pass_bin_is_one_line_not_a_zero_yield_wafer(tmp_path, make, tag):
    g = grids(1)[0]
    p = write(tmp_path, "m.xml", make([g]).replace('BinQuality="Pass"', 'BinQuality="BIN1"'))
    with pytest.raises(UserError, match=rf"m\.xml: .*field BinQuality: no <{tag}> is Pass \(values: 'BIN1', "
                                        r"'Fail'\).*DOMAINVLM_PASS_BINS"):
        MF.read_maps(p)
    assert MF.read_maps(p, pass_bins=["1"])[0].counts()["fail"] == int((g == 2).sum())


def test_sinf_rows_separated_by_commas(tmp_path):
    m = MF.read_maps(write(tmp_path, "w.sinf", _sinf([r.replace(" ", ",") for r in SINF_ROWS])))[0]
    np.testing.assert_array_equal(m.grid, SINF_GRID)


@pytest.mark.parametrize("make,fmt", [(lambda g: W.klarf12(g, "LEFT"), "klarf12"),
                                      (lambda g: W.klarf18(g, "UP"), "klarf18")], ids=["klarf12", "klarf18"])
def test_klarf_keywords_in_any_case(tmp_path, make, fmt):
    gs = grids(2)
    p = write(tmp_path, "k.txt", make(gs).lower())  # fileversion, sampletestplan, record waferrecord ...
    assert MF.sniff(p) == fmt
    maps = MF.read_maps(p)
    assert [m.wafer_id for m in maps] == ["lot7-01", "lot7-02"]
    for m, g in zip(maps, gs):
        np.testing.assert_array_equal(m.grid, g)
