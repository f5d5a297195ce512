"""Resolve an image reference from a record to an RGB PIL image.

References: a path to an image file (png/jpg/...), a DICOM file (.dcm or DICM preamble), or
``<file>#<index>`` for item ``index`` of a file a domain reads (``Domain.load_image``; e.g. a raw wafer map
stored in an npz, rendered with the fixed wafer palette).
Relative paths are resolved against ``base_dir`` (usually the folder of the data file).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import UserError

# One pixel limit for every image a command reads (ask, chat, predict, eval, train, data validate), checked
# from the header before any pixel is decoded: 64 MP is 8000x8000, ~190 MB as RGB, far above what a vision
# encoder uses after resizing. PIL's own guard (MAX_IMAGE_PIXELS) only warns below twice its value, so it
# stays a backstop for paths that open images some other way.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Files taken as images by their name where a folder or list is scanned (predict, chat, labelled image
# folders and lists, web UI examples): the one list; load_image reads every one of them.
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # what PIL opens itself
IMAGE_SUFFIXES = PIL_SUFFIXES + (".dcm", ".dicom")
# What operating systems, zip tools and NASes add to a folder of images, never an input: macOS AppleDouble
# files (._x.jpg, unreadable as images) and __MACOSX/, Synology's @eaDir/ (thumbnails that are real JPEGs),
# Windows' Thumbs.db / desktop.ini and recycle bins, and any hidden (dot) file or folder.
JUNK_FOLDERS = ("__MACOSX", "@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information")
JUNK_FILES = ("thumbs.db", "ehthumbs.db", "desktop.ini")


def is_junk(rel) -> bool:
    """``rel`` (a path relative to the folder being scanned) is one of those files, or lies in such a folder."""
    parts = Path(rel).parts
    return bool(parts) and (any(p.startswith(".") or p in JUNK_FOLDERS for p in parts)
                            or parts[-1].lower() in JUNK_FILES)


def check_pixels(w: int, h: int, name, max_pixels: int | None = None) -> None:
    max_pixels = max_pixels or MAX_PIXELS
    if w * h > max_pixels:
        raise UserError(f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB of a decoded image, upright. 16-bit and float images (X-ray PNG/TIFF exports) are scaled from their
    own value range to 8 bits, as DICOM is; PIL's plain conversion clips everything above 255 to white.
    An EXIF orientation (phone and camera photos) is applied, as the web UI's image box does: the same file
    gave other pixels to ask / predict / eval / train than to the web UI."""
    if im.getexif().get(0x0112, 1) != 1:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        import numpy as np

        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _in(path: str, base_dir) -> Path:
    p = Path(path).expanduser()
    return Path(base_dir) / p if not p.is_absolute() and base_dir is not None else p


def split_ref(ref: str, base_dir: str | Path | None = None) -> tuple[Path, str]:
    """FILE#K -> (FILE under base_dir, 'K' or ''): the last '#', since a file name may hold one (LOT#42.xml#3)."""
    path, sep, idx = ref.rpartition("#")
    if not sep or _in(ref, base_dir).is_file():  # 'LOT#42.xml' itself
        path, idx = ref, ""
    return _in(path, base_dir), idx


def resolve(ref: str, base_dir: str | Path | None = None) -> tuple[Path, int | None]:
    p, idx = split_ref(ref, base_dir)
    index = None
    if idx:
        try:
            index = int(idx)
        except ValueError:
            raise UserError(f"{ref}: image reference index must be an integer") from None
    return p, index


def load_image(ref: str, base_dir: str | Path | None = None, size: int | None = None) -> Image.Image:
    """``size``: the side of a model's fixed square input; an item a domain draws (``file#N``) is drawn at it
    directly (drawing a raw wafer map once at the canvas is 2-3x cheaper than drawing and redrawing it)."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]+://", str(ref)):  # as a path it becomes 'http:/h/x.png': 'not found'
        raise UserError(f"{ref}: URLs are not fetched (nothing is downloaded); save the image and pass the file")
    p, index = resolve(ref, base_dir)
    if not p.exists():
        raise UserError(f"{p}: image not found")
    if index is not None:
        return _indexed(ref, p, base_dir, size)
    img = _from_domains(ref, base_dir, size)  # a file a domain draws whole (e.g. a fab wafer-map file)
    if img is not None:
        return img
    from .dicom import is_dicom, read_dicom

    if is_dicom(p):
        return read_dicom(p, max_pixels=MAX_PIXELS).convert("RGB")
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the limit is checked here, from the header
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            check_pixels(*im.size, p)
            im.load()
            return to_rgb(im)
    except Image.DecompressionBombError:
        raise UserError(f"{p}: image too large (over {MAX_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        if p.suffix.lower() == ".npz":  # an array file of many maps: say how to pick one, not PIL's complaint
            raise UserError(f"{p}: an .npz holds many maps, not one image; name one as {p.name}#N "
                            "(ask: or --index N)") from None
        if p.stat().st_size == 0:
            raise UserError(f"{p}: empty file") from None
        if p.suffix.lower() not in IMAGE_SUFFIXES:  # 'lot.xml' that is no map file: PIL's complaint misleads
            raise UserError(f"{p}: neither an image nor a file a domain reads (e.g. a wafer-map file: its "
                            "content is not one)") from None
        raise UserError(f"{p}: not a readable image ({e.__class__.__name__}: {e})") from None


def as_pil(img, base_dir: str | Path | None = None) -> Image.Image:
    """A conversation's image as PIL: a reference is loaded; an object a domain's ``load_batch`` made (kept
    compact for its answer head, e.g. a wafer die grid) is drawn with its ``to_pil()``."""
    if isinstance(img, str):
        return load_image(img, base_dir)
    return img.to_pil() if hasattr(img, "to_pil") else img


def _from_domains(ref: str, base_dir, size: int | None = None) -> Image.Image | None:
    """The first domain's drawing of ``ref`` (None when no domain owns it)."""
    from .. import domains

    for d in domains.all_domains():
        img = d.load_image(ref, base_dir, size) if d.load_image else None
        if img is not None:
            return img
    return None


def _indexed(ref: str, p: Path, base_dir, size: int | None = None) -> Image.Image:
    """``file#N`` through the first domain that reads it."""
    img = _from_domains(ref, base_dir, size)
    if img is None:
        raise UserError(f"{p}: no domain reads '#index' image references of this file")
    return img
