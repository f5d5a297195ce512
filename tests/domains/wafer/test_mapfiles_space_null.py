"""SINF / G85 ASCII text maps whose null (off-wafer) bin is a space: ASCII codes one character a die, the
off-wafer sites blank (QA: such files were misread or refused). Rows keep their columns when an editor has
stripped trailing spaces; a row wider than COLCT is still the one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from domainvlm.domains.wafer import mapfiles as MF
from domainvlm.domains.wafer.synth import synth_map
from domainvlm.errors import UserError

CODES = {0: " ", 1: "1", 2: "X"}


def grids(n=2, size=24, seed=3):
    rng = np.random.default_rng(seed)
    pats = [("Center",), ("Edge-Ring",), ("Scratch",)]
    return [synth_map(pats[i % len(pats)], size, rng) for i in range(n)]


def sinf_ascii(gs, null_line="NULBC: ", bintype="BINTYPE:ASCII", sep="", colct=True) -> str:
    """A SINF-style file as a prober writes ASCII bins: 'RowData:' + one character per die, nulls blank."""
    lines = []
    for k, g in enumerate(gs):
        lines += ["DEVICE:PX9", "LOT:L1", f"WAFER:L1-{k + 1:02d}", "FNLOC:180", f"ROWCT:{g.shape[0]}"]
        lines += [f"COLCT:{g.shape[1]}"] if colct else []
        lines += [x for x in (bintype, "BCEQU:1", null_line) if x]
        lines += ["RowData:" + sep + "".join(CODES[int(v)] for v in row) for row in g]
    return "\n".join(lines) + "\n"


def stripped(text: str) -> str:
    """What an editor that trims trailing whitespace saves."""
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def write(tmp_path, name, text) -> str:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return str(p)


def _err(path) -> str:
    with pytest.raises(UserError) as e:
        MF.read_maps(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path)
    return msg


def _same(path, gs):
    maps = MF.read_maps(path)
    assert len(maps) == len(gs) and MF.sniff(path) == "g85-ascii"
    for m, g in zip(maps, gs):
        np.testing.assert_array_equal(m.grid, g)
        assert m.meta["bin_type"] == "ascii" and m.meta["null_bin"] == " "
    return maps


@pytest.mark.parametrize("null_line,bintype", [
    ("NULBC: ", "BINTYPE:ASCII"),      # a space, as written
    ("NULBC:' '", "BINTYPE:ASCII"),    # quoted, so no editor can lose it
    ('NULLBIN:" "', "BINTYPE:ASCII"),  # G85's own key name
    ("", "BINTYPE:ASCII"),             # no null bin declared: a space in an ASCII row can be nothing else
    ("NULBC:' '", ""),                 # no BINTYPE: one-character BCEQU and a space null say ASCII
], ids=["space", "quoted", "nullbin", "undeclared", "no-bintype"])
def test_space_nulls_read_to_the_right_grid(tmp_path, null_line, bintype):
    gs = grids()
    text = sinf_ascii(gs, null_line, bintype)
    assert "RowData:   " in text  # the rows start with blank off-wafer sites
    maps = _same(write(tmp_path, "w.sinf", text), gs)
    assert [m.counts()["fail"] for m in maps] == [int((g == 2).sum()) for g in gs]


@pytest.mark.parametrize("sep", ["", " "], ids=["no-separator", "space-after-colon"])
def test_trailing_space_stripped_rows_keep_their_columns(tmp_path, sep):
    """An editor drops each row's trailing nulls (and 'NULBC: ' becomes 'NULBC:'): rows are padded to COLCT."""
    gs = grids()
    text = stripped(sinf_ascii(gs, sep=sep))
    assert "NULBC:\n" in text and not any(line.endswith(" ") for line in text.splitlines())
    _same(write(tmp_path, "w.sinf", text), gs)


def test_all_null_row_stripped_to_nothing(tmp_path):
    g = np.zeros((4, 5), np.uint8)
    g[1:3, 1:4] = 1
    g[2, 2] = 2
    _same(write(tmp_path, "w.sinf", stripped(sinf_ascii([g]))), [g])


def test_row_wider_than_colct_is_the_one_line_error(tmp_path):
    gs = grids(1)
    lines = sinf_ascii(gs).splitlines()
    i = next(j for j, t in enumerate(lines) if t.startswith("RowData:")) + 5
    lines[i] += "1"  # one die past the declared width
    msg = _err(write(tmp_path, "w.sinf", "\n".join(lines) + "\n"))
    assert f"line {i + 1} (RowData 6)" in msg and f"{gs[0].shape[1] + 1} bin codes, expected " \
        f"{gs[0].shape[1]} (COLCT)" in msg


def test_stripped_rows_without_colct_say_what_gives_the_width(tmp_path):
    """No declared width: a short row cannot be told from a die left out, so it stays an error, with the cause."""
    msg = _err(write(tmp_path, "w.sinf", stripped(sinf_ascii(grids(1), colct=False))))
    assert "field RowData" in msg and "(as in row 1)" in msg and "COLCT gives the row width" in msg


def test_unstripped_rows_without_colct_are_read(tmp_path):
    gs = grids(1)
    _same(write(tmp_path, "w.sinf", sinf_ascii(gs, colct=False)), gs)


def test_ascii_codes_separated_by_spaces_are_still_read(tmp_path):
    """'RowData:1 1 X': spaces between codes (no null sites) are separators, not a map of nulls."""
    text = "WAFER:W1\nBINTYPE:ASCII\nBCEQU:1\nRowData:1 1 X\nRowData:1 X 1\n"
    m = MF.read_maps(write(tmp_path, "w.sinf", text))[0]
    np.testing.assert_array_equal(m.grid, [[1, 1, 2], [1, 2, 1]])


def test_hex_sinf_is_not_taken_for_ascii(tmp_path):
    """A hex SINF with a one-character BCEQU and a blank NULBC keeps its two-character codes."""
    text = "WAFER:W1\nBCEQU:1\nNULBC:\nCOLCT:3\nRowData:01 01 1A\nRowData:1A 01 01\n"
    m = MF.read_maps(write(tmp_path, "w.sinf", text))[0]
    assert m.meta["bin_type"] == "hexadecimal"
    np.testing.assert_array_equal(m.grid, [[1, 1, 2], [2, 1, 1]])
