"""Fab wafer-map files: SEMI G85 (XML and ASCII), SEMI E142, STDF V4 and KLARF 1.2 / 1.8, detected by content.

``sniff(path)`` names the format (or None), ``read_maps(path)`` returns one :class:`WaferMap` per wafer in
file order; ``FILE#K`` (K from 0) picks one. Every grid is 0 off-wafer / 1 pass / 2 fail with the notch at
the bottom (``common``). ``pass_bins`` (codes as the file writes them, or STDF hard bins) overrides the file's
pass bins; the environment variable ``DOMAINVLM_PASS_BINS=1,2`` sets it for the CLI, server and web UI.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ....errors import UserError
from .common import WaferMap, xml_root_name

__all__ = ["FORMATS", "WaferMap", "sniff", "sniff_bytes", "read_maps", "read_bytes", "get_wafer", "wafer_count"]

FORMATS = ("g85-xml", "g85-ascii", "e142", "stdf", "klarf12", "klarf18")
HEAD = 65536
MAX_BYTES = 1 << 30  # 1 GiB: far above one lot of STDF; refuses a wrong file before reading it whole


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _utf8(data: bytes) -> bytes:
    """UTF-16 text (Windows tools' 'Unicode') as UTF-8; anything else as it is."""
    if data[:2] in UTF16_BOMS:
        return data.decode("utf-16", errors="replace").encode("utf-8")
    return data


def sniff_bytes(head: bytes) -> str | None:
    from . import g85_ascii, klarf, stdf

    if stdf.looks_like(head):
        return "stdf"
    head = _utf8(head[:len(head) & ~1])  # even length: a UTF-16 head cut mid-character
    if b"\x00" in head[:4096]:
        return None  # binary and not STDF: an image, npz, pickle ...
    root = xml_root_name(head)
    if root is not None:
        return {"Maps": "g85-xml", "Map": "g85-xml", "MapData": "e142"}.get(root)
    text = head.decode("utf-8", errors="replace")
    return klarf.looks_like(text) or ("g85-ascii" if g85_ascii.looks_like(text) else None)


def sniff(path) -> str | None:
    """The map-file format of ``path`` by content, or None when it is not one of ours (or not a file)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with open(p, "rb") as fh:
            return sniff_bytes(fh.read(HEAD))
    except OSError:
        return None


def env_pass_bins() -> list[str] | None:
    v = os.environ.get("DOMAINVLM_PASS_BINS", "").strip()
    return [b.strip() for b in v.replace(";", ",").split(",") if b.strip()] or None if v else None


def read_bytes(data: bytes, name: str = "upload", pass_bins=None) -> list[WaferMap]:
    """Parse a map file held in memory (HTTP uploads); ``name`` is used in messages and ``WaferMap.path``."""
    from . import e142, g85_ascii, g85_xml, klarf, stdf

    fmt = sniff_bytes(data[:HEAD])
    if fmt is None:
        root = xml_root_name(_utf8(data[:HEAD & ~1]))
        if root and root.lower() in ("maps", "map", "mapdata"):
            raise UserError(f"{name}: root element <{root}>: XML tags are case-sensitive; SEMI G85 writes <Maps> or "
                            "<Map>, SEMI E142 <MapData>")
        raise UserError(f"{name}: not a wafer-map file (expected SEMI G85 XML/ASCII, SEMI E142, STDF V4 or KLARF)")
    explicit = pass_bins is not None
    pass_bins = env_pass_bins() if pass_bins is None else pass_bins
    if fmt.startswith("klarf"):
        if explicit:  # the environment's setting is meant for sort maps: a folder may mix in KLARF files
            raise UserError(f"{name}: pass_bins does not apply to KLARF (a die fails when it has a defect)")
        return _checked(klarf.read(_utf8(data), name, fmt), name)
    if fmt == "g85-ascii":
        data = _utf8(data)  # XML keeps its bytes: the parser reads a UTF-16 BOM and declaration itself
    reader = {"g85-xml": g85_xml, "g85-ascii": g85_ascii, "e142": e142, "stdf": stdf}[fmt]
    return _checked(reader.read(data, name, pass_bins=pass_bins), name)


def _checked(maps: list[WaferMap], name: str) -> list[WaferMap]:
    """Every reader's maps have rows and columns: rows with no bin codes at all would otherwise reach the
    renderer, the lot report or a training record as a (rows, 0) grid and fail there without the file's name."""
    for m in maps:
        if m.grid.ndim != 2 or 0 in m.grid.shape:
            raise UserError(f"{name}: wafer {m.index} ({m.wafer_id}): field BinCode: the map rows hold no bin codes "
                            f"(a {'x'.join(map(str, m.grid.shape))} map)")
    return maps


def read_maps(path, pass_bins=None) -> list[WaferMap]:
    """All wafers of a map file, in file order."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    if p.stat().st_size > MAX_BYTES:
        raise UserError(f"{p}: over {MAX_BYTES >> 20} MiB, too large for a wafer-map file")
    return read_bytes(p.read_bytes(), str(p), pass_bins)


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int, env_bins: tuple | None) -> tuple[WaferMap, ...]:
    maps = read_maps(path)  # read_bytes applies DOMAINVLM_PASS_BINS; env_bins only keys the cache
    for m in maps:  # shared by every caller (a lot folder asks for each wafer of a file in turn)
        m.grid.flags.writeable = False
    return tuple(maps)


def _all(path) -> tuple[WaferMap, ...]:
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError:
        raise UserError(f"{path}: no such file") from None
    pb = env_pass_bins()
    return _cached(p, st.st_mtime_ns, st.st_size, tuple(pb) if pb is not None else None)


def wafer_count(path) -> int:
    return len(_all(path))


def get_wafer(path, index: int | None) -> WaferMap:
    """Wafer ``index`` of a map file (cached); None is allowed only for a single-wafer file."""
    maps = _all(path)
    if index is None:
        if len(maps) != 1:
            raise UserError(f"{path}: holds {len(maps)} wafers; pick one as {path}#K (K from 0 to {len(maps) - 1})")
        index = 0
    if not 0 <= index < len(maps):
        raise UserError(f"{path}#{index}: field #K: index out of range (the file holds {len(maps)} "
                        f"wafer{'s' if len(maps) != 1 else ''}, #0..#{len(maps) - 1})")
    return maps[index]
