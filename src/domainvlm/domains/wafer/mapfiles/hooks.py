"""What the wafer Domain registers for fab map files (domains/wafer/__init__.py): image references, uploads,
batch folders. Each returns None when its input is not a map file, so the generic caller carries on."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from pathlib import Path

from ....errors import UserError
from . import HEAD, UTF16_BOMS, get_wafer, read_bytes, sniff_bytes, wafer_count

_INDEX = re.compile(r"#(\d+)\s*$")


@functools.lru_cache(maxsize=4096)
def _kind(path: str, mtime_ns: int, size: int) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            if b"\x00" in head and head[:4] not in (b"\x02\x00\x00\x0a", b"\x00\x02\x00\x0a") \
                    and head[:2] not in UTF16_BOMS:
                return None  # binary, not STDF: png / npz / dicom; decided without reading more
            return sniff_bytes(head + fh.read(HEAD - len(head)))
    except OSError:
        return None


def kind(path) -> str | None:
    """Cached sniff (keyed on mtime and size): load_image asks for every image it opens."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _kind(os.path.abspath(path), st.st_mtime_ns, st.st_size) if os.path.isfile(path) else None


def map_image(p: Path, index: int | None, map_size: int | None = None):
    """Domain.load_image: a map file (``FILE`` or ``FILE#K``) -> the rendered die grid, else None."""
    if kind(p) is None:
        return None
    from ..render import render_map

    return render_map(get_wafer(str(p), index).grid, size=map_size)


def _upload_image(data: bytes, what: str, index: int | None, max_pixels: int):
    from ..render import render_map
    from ....inference.image_input import ImageInputError, ImageTooLarge

    try:
        maps = read_bytes(data, what)
    except UserError as e:
        raise ImageInputError(str(e)) from None
    if index is None and len(maps) != 1:
        raise ImageInputError(f"{what}: the map file holds {len(maps)} wafers; send one, or append #K "
                              f"(K from 0 to {len(maps) - 1}) to the base64 / data URL")
    k = index or 0
    if not 0 <= k < len(maps):
        # `what` is a request field here, not a path: '#K' after it would garble the message and error.param
        raise ImageInputError(f"{what}: field #K: #{k} is out of range (the file holds {len(maps)} wafers, "
                              f"#0 to #{len(maps) - 1})")
    h, w = maps[k].grid.shape
    if h * w > max_pixels:
        raise ImageTooLarge(f"{what}: map of {h}x{w} dies is over the limit of {max_pixels:,}")
    return render_map(maps[k].grid)


def map_upload(data: bytes, what: str, max_pixels: int):
    """Domain.extra["decode_upload"] (inference/image_input.py): uploaded map-file bytes -> rendered map."""
    if sniff_bytes(data[:HEAD]) is None:
        return None
    return _upload_image(data, what, None, max_pixels)


def map_upload_at(value, what: str, max_pixels: int):
    """Domain.extra["decode_upload_at"]: (map-file bytes, K) -> wafer K rendered (a file: URL ending in #K)."""
    data, index = value
    if sniff_bytes(data[:HEAD]) is None:
        from ....inference.image_input import ImageInputError

        raise ImageInputError(f"{what}: #K selects a wafer, but the file is not a wafer-map file")
    return _upload_image(data, what, index, max_pixels)


def map_base64(s, what: str, max_pixels: int):
    """Domain.extra["decode_base64"]: '<base64 or data URL of a map file>#K' picks wafer K; else None."""
    m = _INDEX.search(s) if isinstance(s, str) else None
    if m is None:
        return None
    from ....inference.image_input import ImageInputError

    body = s[:m.start()].strip()
    if body.startswith("data:"):
        body = body.partition(",")[2]
    try:
        data = base64.b64decode(re.sub(r"\s+", "", body), validate=True)  # wrapped base64 too, as for images
    except (binascii.Error, ValueError):
        raise ImageInputError(f"{what}: invalid base64 before #{m.group(1)}") from None
    if sniff_bytes(data[:HEAD]) is None:
        raise ImageInputError(f"{what}: #K selects a wafer, but the data is not a wafer-map file")
    return _upload_image(data, what, int(m.group(1)), max_pixels)


def folder_wafers(folder: Path, images) -> list[tuple[str, str, str | None]]:
    """Domain.extra["folder_items"] (predict folders): (row id, image ref FILE#K, error) per wafer of each map file
    under ``folder`` that is not already an image; a file that cannot be read becomes one row with its error."""
    taken = {Path(p) for p in images if _image_bytes(Path(p))}  # 'x.png' holding a G85 map is a map file
    out = []
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q not in taken):
        if p.name.startswith(".") or kind(p) is None:
            continue
        rel = p.relative_to(folder).as_posix()
        try:
            n = wafer_count(p)
        except UserError as e:
            out.append((rel, str(p), str(e)))
            continue
        out += [(f"{rel}#{k}", f"{p}#{k}", None) for k in range(n)]
    return out


_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def _image_bytes(p: Path) -> bool:
    """Does the file start as an image (PNG, JPEG, GIF, BMP, TIFF, WebP) or a DICOM (preamble + 'DICM')?
    132 bytes read, so a folder of photos costs one small read each, not a map-file sniff."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # unreadable: the image reader says why
    return head.startswith(_MAGIC) or head[128:132] == b"DICM"


def file_wafers(path: Path) -> list[tuple[str, str, None]] | None:
    """Domain.extra["file_items"] (``predict lot.stdf``): (row id NAME#K, image ref FILE#K, None) per wafer of one
    map file, or None when it is no map file. A file that does not read is one line (nothing to answer)."""
    if kind(path) is None:
        return None
    return [(f"{path.name}#{k}", f"{path}#{k}", None) for k in range(wafer_count(path))]
