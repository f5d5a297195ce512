"""Conventions of the formats beyond the plain die map: SINF edge / reference dies, STDF retests (the last
result of each die wins, one map per wafer id), KLARF lot-level SampleTestPlan and SampleDieMap."""

from __future__ import annotations

import numpy as np
import pytest

from domainvlm.domains.wafer import mapfiles as MF


def write(tmp_path, name, content) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def _sinf(rows, bcequ="BCEQU:01", extra=()):
    head = ["DEVICE:PX9", "LOT:L1", "WAFER:L1-01", "FNLOC:180", f"ROWCT:{len(rows)}",
            f"COLCT:{len(rows[0].split())}", bcequ, "NULBC:__", *extra]
    return "\n".join(head + ["RowData:" + r for r in rows]) + "\n"


SINF_REF_ROWS = ["FD 01 FF", "01 1F 01", "FE 01 ff"]


@pytest.mark.parametrize("bcequ,extra,ref", [("BCEQU:01", (), 0), ("BCEQU:01 FF", (), 1),
                                             ("BCEQU:01", ("FAILBIN:1F FF",), 2)], ids=["off", "bcequ", "failbin"])
def test_sinf_edge_and_reference_dies_are_no_product_dies(tmp_path, bcequ, extra, ref):
    """SINF: FD / FE edge dies and FF reference dies are off the product map (not fails) unless listed."""
    m = MF.read_maps(write(tmp_path, "w.sinf", _sinf(SINF_REF_ROWS, bcequ, extra)))[0]
    np.testing.assert_array_equal(m.grid, [[0, 1, ref], [1, 2, 1], [0, 1, ref]])
    assert m.counts()["fail"] == 1 + 2 * (ref == 2)


def test_sinf_pass_bins_given_by_the_user_list_a_reference_die_too(tmp_path):
    m = MF.read_maps(write(tmp_path, "w.sinf", _sinf(SINF_REF_ROWS)), pass_bins=["01", "FF"])[0]
    np.testing.assert_array_equal(m.grid, [[0, 1, 1], [1, 2, 1], [0, 1, 1]])


def test_stdf_whole_wafer_retest_is_one_map_last_result_wins(tmp_path):
    """A second WIR/WRR of the same WAFER_ID (the wafer probed again) continues that wafer: one map per wafer
    id, each die's last result; meta counts the runs and the retested dies."""
    import mapfile_writers as W
    from domainvlm.domains.wafer.synth import synth_map

    g = synth_map(("Center",), 26, np.random.default_rng(1))
    first, again = g.copy(), np.zeros_like(g)
    redo = (g == 1) & (np.indices(g.shape).sum(0) % 5 == 0)  # these dies fail first, pass when retested
    first[redo], again[redo] = 2, 1
    other = synth_map((), 26, np.random.default_rng(2))
    data = W.stdf_bytes([first, other, again])
    assert data.count(b"\x03W03") == 2  # WIR and WRR: give the third run the first wafer's id
    maps = MF.read_maps(write(tmp_path, "lot.stdf", data.replace(b"\x03W03", b"\x03W01")))
    assert [m.wafer_id for m in maps] == ["W01", "W02"]
    np.testing.assert_array_equal(maps[0].grid, g)
    np.testing.assert_array_equal(maps[1].grid, other)
    assert (maps[0].meta["wafer_runs"], maps[0].meta["retested_dies"]) == (2, int(redo.sum())) and redo.sum() > 5
    assert (maps[1].meta["wafer_runs"], maps[1].meta["retested_dies"]) == (1, 0)


def test_stdf_retested_dies_within_one_wafer_run_are_counted(tmp_path):
    import mapfile_writers as W
    from domainvlm.domains.wafer.synth import synth_map

    g = synth_map(("Scratch",), 26, np.random.default_rng(3))
    m = MF.read_maps(write(tmp_path, "r.stdf", W.stdf_bytes([g], retest=True)))[0]
    n = sum(1 for v in W._dies(g, y_up=False)[::7] if v[2] == 1)  # the writer retests every 7th passing die
    np.testing.assert_array_equal(m.grid, g)
    assert (m.meta["wafer_runs"], m.meta["retested_dies"]) == (1, n) and n > 0


def _klarf12_lot(grids, lot_list="SampleTestPlan", wafer_plan=None):
    """KLARF 1.2 whose die list is given once, before the first WaferID (as the lot's), as ``lot_list``;
    ``wafer_plan(x, y)``: also a SampleTestPlan of these dies in each wafer."""
    import mapfile_writers as W

    dies = W._dies(np.asarray(grids[0]), y_up=True)
    text = W.klarf12(grids, with_plan=wafer_plan is not None)
    if wafer_plan is not None:  # the writer's per-wafer plan (all dies) cut down to wafer_plan's
        keep = [(x, y) for x, y, _ in dies if wafer_plan(x, y)]
        full = "\n".join([f"SampleTestPlan {len(dies)}"] + [f" {x} {y}" for x, y, _ in dies]) + ";"
        text = text.replace(full, "\n".join([f"SampleTestPlan {len(keep)}"] + [f" {x} {y}" for x, y in keep]) + ";")
    lot = "\n".join([f"{lot_list} {len(dies)}"] + [f" {x} {y}" for x, y, _ in dies]) + ";\n"
    return text.replace('WaferID "LOT7-01";', lot + 'WaferID "LOT7-01";', 1)


def _two(seed=4):
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(seed)
    g = [synth_map(p, 26, rng) for p in (("Center",), ("Edge-Loc",))]
    assert np.array_equal(g[0] > 0, g[1] > 0)  # one die layout for the lot
    return g


@pytest.mark.parametrize("lot_list", ["SampleTestPlan", "SampleDieMap"])
def test_klarf12_die_list_before_the_first_wafer_holds_for_every_wafer(tmp_path, lot_list):
    g = _two()
    maps = MF.read_maps(write(tmp_path, "k.000", _klarf12_lot(g, lot_list)))
    assert len(maps) == 2 and all(m.meta["uninspected_dies"] == 0 for m in maps)
    for m, want in zip(maps, g):
        np.testing.assert_array_equal(m.grid, want)


def test_klarf12_sample_die_map_dies_outside_the_plan_are_not_inspected(tmp_path):
    g = _two()
    h, w = g[0].shape
    skip = (g[0] == 1) & (g[1] == 1)  # left out of the plans: dies that pass on both wafers, left of centre
    skip[:, w // 2:] = False  # die (0, 0) is at (h // 2, w // 2), y grows upwards
    maps = MF.read_maps(write(tmp_path, "k.000", _klarf12_lot(g, "SampleDieMap",
                                                              lambda x, y: not skip[h // 2 - y, w // 2 + x])))
    for m, want in zip(maps, g):
        np.testing.assert_array_equal(m.grid, np.where(skip, 0, want))
        assert m.meta["uninspected_dies"] == int(skip.sum()) > 0


def test_klarf18_lot_record_die_lists_hold_for_its_wafers(tmp_path):
    text = '''Record FileRecord "1.8"
{
  Record LotRecord "L9"
  {
    List SampleDieMap
    {
      Columns 2 { int32 XINDEX, int32 YINDEX }
      Data 3 { 0 0; 1 0; 2 0; }
    }
    Field SampleTestPlan 2 {0 0, 1 0}
    Record WaferRecord "W1"
    {
      List DefectList
      {
        Columns 3 { int32 DEFECTID, int32 XINDEX, int32 YINDEX }
        Data 1 { 1 1 0; }
      }
    }
    Record WaferRecord "W2"
    {
      Field SampleTestPlan 3 {0 0, 1 0, 2 0}
      List DefectList
      {
        Columns 3 { int32 DEFECTID, int32 XINDEX, int32 YINDEX }
        Data 1 { 1 2 0; }
      }
    }
  }
}
EndOfFile;
'''
    w1, w2 = MF.read_maps(write(tmp_path, "k.klarf", text))
    np.testing.assert_array_equal(w1.grid, [[1, 2, 0]])  # die (2, 0): on the wafer, not in the plan
    np.testing.assert_array_equal(w2.grid, [[1, 1, 2]])  # the wafer's own plan replaces the lot's
    assert (w1.meta["uninspected_dies"], w2.meta["uninspected_dies"]) == (1, 0)
