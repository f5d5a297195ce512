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
