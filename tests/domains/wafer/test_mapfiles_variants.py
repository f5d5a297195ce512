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
