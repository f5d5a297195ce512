"""STDF V4 wafer-sort data -> bin maps (a small reader of the published record layout; no test results read).

Records used: FAR (byte order, version), MIR (LOT_ID), WCR (WF_FLAT notch, POS_X / POS_Y axis directions;
WAFR_SIZ / DIE_HT / DIE_WID and CENTER_X / CENTER_Y give the wafer frame in dies, so the map keeps its
off-wafer border: see ``common.grid_from_dies``),
WIR / WRR (one wafer each), HBR (HBIN_PF: which hard bins pass), PRR (X_COORD, Y_COORD, PART_FLG, HARD_BIN),
MRR (the end: a file without it, a wafer still open or no WIR at all, was cut short, which is an error).
Pass/fail of a die: PART_FLG bit 3 (0 pass, 1 fail) while bit 4 says it is valid; else the HBR pass flag of its
hard bin; else hard bin 1 passes. ``pass_bins=[1, 3]`` (hard bins) overrides all of that.
Retests: a die tested twice keeps its last result (as PART_FLG bits 0/1 say a retest supersedes the earlier
part), and a WIR of a WAFER_ID already seen continues that wafer: one map per wafer id, in the order of first
test; ``meta`` counts the runs (``wafer_runs``) and the dies with several results (``retested_dies``).
Without WCR: X grows to the right, Y downwards, notch at the bottom (the common prober default). Files without
WIR give one map of all PRRs.
"""

from __future__ import annotations

import struct

import numpy as np

from .common import FAIL, PASS, WaferMap, fail, grid_from_dies, normalise, notch_degrees

FMT = "stdf"
FAR, MIR, MRR, WCR, WIR, WRR, HBR, PRR = (0, 10), (1, 10), (1, 20), (2, 30), (2, 10), (2, 20), (1, 40), (5, 20)
_NAMES = {FAR: "FAR", MIR: "MIR", MRR: "MRR", WCR: "WCR", WIR: "WIR", WRR: "WRR", HBR: "HBR", PRR: "PRR"}
MISSING_XY = -32768


def looks_like(head: bytes) -> bool:
    return head[:4] in (b"\x02\x00\x00\x0a", b"\x00\x02\x00\x0a")


def _records(data: bytes, path):
    """(record number, offset, (typ, sub), body) for every record; a short last record is an error."""
    if not looks_like(data):
        raise fail(path, "record 1 (FAR) at byte 0", "field REC_TYP/REC_SUB: not an STDF file (no FAR first)")
    endian = "<" if data[:2] == b"\x02\x00" else ">"
    pos, n = 0, 0
    while pos < len(data):
        n += 1
        if pos + 4 > len(data):
            raise fail(path, f"record {n} at byte {pos}", f"field REC_LEN: truncated header "
                                                          f"({len(data) - pos} of 4 bytes)")
        (length,) = struct.unpack_from(endian + "H", data, pos)
        key = (data[pos + 2], data[pos + 3])
        if pos + 4 + length > len(data):
            raise fail(path, f"record {n} ({_NAMES.get(key, '%d/%d' % key)}) at byte {pos}",
                       f"field REC_LEN: truncated (says {length} bytes, {len(data) - pos - 4} left)")
        yield n, pos, key, data[pos + 4:pos + 4 + length], endian
        pos += 4 + length


def _cn(body: bytes, off: int) -> str:
    """A Cn string at ``off`` ('' when the record ends before it, as STDF allows)."""
    if off >= len(body):
        return ""
    return body[off + 1:off + 1 + body[off]].decode("latin-1").strip()


def _wcr(body: bytes, e: str) -> dict:
    """WCR fields; STDF lets a writer stop a record early, so absent ones take their 'missing' value."""
    b = body + b"\x00" * max(0, 20 - len(body))
    size, height, width = struct.unpack_from(e + "fff", b, 0)
    cx, cy = struct.unpack_from(e + "hh", b, 14)
    return {"WAFR_SIZ": size, "DIE_HT": height, "DIE_WID": width, "WF_FLAT": chr(b[13] or 32),
            "CENTER_X": cx, "CENTER_Y": cy, "POS_X": chr(b[18] or 32), "POS_Y": chr(b[19] or 32)}


def _frame(wcr: dict):
    """(rows, cols, cx, cy) when the WCR gives the wafer diameter, die size and centre die; else None."""
    size, h, w = wcr.get("WAFR_SIZ", 0), wcr.get("DIE_HT", 0), wcr.get("DIE_WID", 0)
    cx, cy = wcr.get("CENTER_X", MISSING_XY), wcr.get("CENTER_Y", MISSING_XY)
    if not (size > 0 and h > 0 and w > 0) or MISSING_XY in (cx, cy) or size / min(h, w) > 4096:
        return None
    return round(size / h), round(size / w), cx, cy


class _Wafer:
    def __init__(self, wid: str):
        self.wid, self.xs, self.ys, self.flags, self.hbins, self.runs = wid, [], [], [], [], 1


def read(data: bytes, path, pass_bins=None) -> list[WaferMap]:
    lot, wcr, hbin_pf, wafers, open_ = "", {}, {}, [], {}  # open_: test head -> its wafer (WIR .. WRR)
    n, ended = 0, False
    for n, pos, key, body, e in _records(data, path):
        ended = ended or key == MRR
        where = f"record {n} ({_NAMES.get(key, key)}) at byte {pos}"
        if key == FAR:
            if len(body) < 2 or body[1] != 4:
                raise fail(path, where, f"field STDF_VER: {body[1] if len(body) > 1 else 'missing'}, only V4 is read")
        elif key == MIR:
            lot = _cn(body, 15)
        elif key == WCR:
            wcr = _wcr(body, e)
        elif key == HBR and len(body) >= 9 and chr(body[8]).upper() in "PF":  # ' ': unknown, so bin 1 rule
            hbin_pf[struct.unpack_from(e + "H", body, 2)[0]] = chr(body[8]).upper()
        elif key == WIR and body:
            wid = _cn(body, 6)
            again = next((w for w in wafers if wid and w.wid == wid), None)
            if again is not None:  # the wafer tested again (retest): its dies go on, the last result wins
                again.runs += 1
            else:
                wafers.append(_Wafer(wid or str(len(wafers))))
            open_[body[0]] = again or wafers[-1]
        elif key == WRR and body:
            open_.pop(body[0], None)
        elif key == PRR:
            if len(body) < 13:
                raise fail(path, where, f"field X_COORD/Y_COORD: record has {len(body)} bytes, needs 13")
            hard, _soft, x, y = struct.unpack_from(e + "HHhh", body, 5)
            if x == MISSING_XY or y == MISSING_XY:
                raise fail(path, where, "field X_COORD/Y_COORD: missing (-32768); not wafer-sort data")
            w = _wafer_of(body[0], open_, wafers, path, where)
            w.xs.append(x), w.ys.append(y), w.flags.append(body[2]), w.hbins.append(hard)
    if not ended and (open_ or not any(w.wid != "?" for w in wafers)):
        # cut at a record boundary: a wafer's results stop part-way, and read on it would be a smaller wafer
        what = f"wafer {next(iter(open_.values())).wid} has no WRR" if open_ else "no WRR/MRR"
        raise fail(path, f"record {n + 1} at byte {len(data)}", f"field MRR: missing, the file ends after "
                                                                f"record {n} ({what}): the file is cut short")
    try:
        pass_bins = None if pass_bins is None else [int(b) for b in pass_bins]
    except (TypeError, ValueError):
        raise fail(path, "pass_bins (DOMAINVLM_PASS_BINS)", f"field HARD_BIN: {', '.join(map(str, pass_bins))!r} "
                                                            "are not all hard bin numbers") from None
    wafers = [w for w in wafers if w.xs]
    if not wafers:
        raise fail(path, "PRR", "field X_COORD/Y_COORD: no part results with die coordinates in this file")
    seen = {h for w in wafers for h in w.hbins} | set(hbin_pf)
    if pass_bins is not None and not seen & set(pass_bins):  # a typo would fail every die: 0 % yield
        raise fail(path, "pass_bins (DOMAINVLM_PASS_BINS)", f"field HARD_BIN: none of "
                   f"{', '.join(map(str, pass_bins))} is a hard bin of this file (it has {', '.join(map(str, sorted(seen)))})")
    maps = [_map(w, k, path, lot, wcr, hbin_pf, pass_bins) for k, w in enumerate(wafers)]
    if not ended:  # every wafer closed, but the lot's end is missing: later wafers may be cut off. Read, and say so
        import sys

        print(f"domainvlm: {path}: no MRR at the end (STDF requires one): the file may be cut short after wafer "
              f"{maps[-1].wafer_id}; read {len(maps)} wafer(s)", file=sys.stderr)
        for m in maps:
            m.meta["ends_without_mrr"] = True
    return maps


def _wafer_of(head: int, open_: dict, wafers: list, path, where: str) -> _Wafer:
    """The wafer a PRR belongs to: its head's open wafer, the only open one, or (no WIR at all) one for the file."""
    if head in open_:
        return open_[head]
    if len(open_) == 1:  # WIR with HEAD_NUM 255 (all heads) or a head the WIR did not name
        return next(iter(open_.values()))
    if not wafers:
        wafers.append(_Wafer("?"))
    if len(wafers) == 1 and wafers[0].wid == "?":
        return wafers[0]
    raise fail(path, where, f"field HEAD_NUM: part result of head {head} outside any open WIR/WRR wafer")


def _passed(flags: np.ndarray, hbins: np.ndarray, hbin_pf: dict, pass_bins) -> np.ndarray:
    if pass_bins is not None:
        return np.isin(hbins, pass_bins)
    by_bin = np.array([hbin_pf.get(int(h), "P" if h == 1 else "F") == "P" for h in hbins.tolist()], bool)
    valid = (flags & 0x10) == 0
    return np.where(valid, (flags & 0x08) == 0, by_bin)


def _retested(w: _Wafer) -> int:
    """Dies with more than one part result (a retest: of the whole wafer, or of those dies)."""
    _, n = np.unique(np.stack([w.xs, w.ys]), axis=1, return_counts=True)
    return int((n > 1).sum())


def _map(w: _Wafer, k: int, path, lot, wcr, hbin_pf, pass_bins) -> WaferMap:
    flags, hbins = np.array(w.flags, np.uint8), np.array(w.hbins, np.int64)
    values = np.where(_passed(flags, hbins, hbin_pf, pass_bins), PASS, FAIL).astype(np.uint8)
    pos_x, pos_y = wcr.get("POS_X", " ").upper(), wcr.get("POS_Y", " ").upper()
    grid, how = grid_from_dies(w.xs, w.ys, values, x_right=pos_x != "L", y_down=pos_y != "U", frame=_frame(wcr),
                               path=path, where=f"PRR (wafer {w.wid})", fld="X_COORD/Y_COORD")
    notch = notch_degrees(wcr.get("WF_FLAT", " "), path, "WCR", "WF_FLAT")
    meta = {"orientation_deg": notch, "wf_flat": wcr.get("WF_FLAT"), "pos_x": pos_x, "pos_y": pos_y,
            "x_range": [int(min(w.xs)), int(max(w.xs))], "y_range": [int(min(w.ys)), int(max(w.ys))],
            "grid": how, "pass_from": "pass_bins" if pass_bins is not None else "PART_FLG", "parts": len(w.xs),
            "wafer_runs": w.runs, "retested_dies": _retested(w)}
    return WaferMap(normalise(grid, notch), w.wid if w.wid != "?" else str(k), lot, FMT, str(path), k, meta)
