"""Untrusted image input (HTTP API, uploads): bytes / base64 / data: URL / file: URL -> RGB PIL image.

Every failure is an :class:`ImageInputError` naming the field, with an HTTP status (400 unreadable, 413 too
large). The pixel count is checked from the header *before* decoding, so decompression bombs (a few KB of
PNG claiming 20000x20000 pixels) cost nothing; truncated files fail instead of being silently padded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.parse
from pathlib import Path

from PIL import Image

from ..data.images import to_rgb
from ..errors import UserError

DEFAULT_MAX_PIXELS = 16_000_000  # 4000x4000; far above what the vision encoders use after resizing


_WS = re.compile(r"\s+")


class ImageInputError(UserError):
    status = 400


class ImageTooLarge(ImageInputError):
    status = 413


def _from_domains(value, what: str, max_pixels: int, key: str):
    """A domain's decoding of an upload it owns (``Domain.extra[key]``, e.g. a fab wafer-map file), else None."""
    from .. import domains

    for d in domains.all_domains():
        fn = d.extra.get(key)
        img = fn(value, what, max_pixels) if fn else None
        if img is not None:
            return img
    return None


def _check_size(w: int, h: int, what: str, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageTooLarge(f"{what}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")


def _decode_dicom(data: bytes, what: str, max_pixels: int) -> Image.Image:
    from ..data.dicom import DicomTooLarge, read_dicom

    try:
        return read_dicom(data, name=what, max_pixels=max_pixels).convert("RGB")
    except DicomTooLarge as e:
        raise ImageTooLarge(str(e)) from None
    except UserError as e:
        raise ImageInputError(str(e)) from None


def decode_image(data: bytes, what: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes (PNG/JPEG/WebP/BMP/TIFF/GIF..., or DICOM) into an RGB image."""
    if not data:
        raise ImageInputError(f"{what}: empty image data")
    if data[128:132] == b"DICM":
        return _decode_dicom(data, what, max_pixels)
    img = _from_domains(data, what, max_pixels, "decode_upload")  # e.g. G85 / E142 / STDF / KLARF bytes
    if img is not None:
        return img
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own guard fires first for gross sizes
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise ImageTooLarge(f"{what}: image has {size}, over the limit of {max_pixels:,}") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for garbage
        raise ImageInputError(f"{what}: not a recognised image format") from None
    _check_size(*im.size, what, max_pixels)
    try:
        im.load()
        return to_rgb(im)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{what}: image over the pixel limit of {max_pixels:,}") from None
    except MemoryError:
        raise ImageTooLarge(f"{what}: image too large to decode") from None
    except Exception as e:  # noqa: BLE001 - truncated / corrupt data
        raise ImageInputError(f"{what}: corrupt or truncated image ({e.__class__.__name__}: {e})") from None


def decode_base64(s: str, what: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Plain base64 or a ``data:<mime>;base64,...`` URL."""
    if not isinstance(s, str) or not s.strip():
        raise ImageInputError(f"{what}: expected a base64 string")
    s = s.strip()
    img = _from_domains(s, what, max_pixels, "decode_base64")  # e.g. "<wafer-map file base64>#K"
    if img is not None:
        return img
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or ";base64" not in head:
            raise ImageInputError(f"{what}: data URL must be 'data:<mime>;base64,<data>'")
    try:  # line breaks as `base64` (76 columns) and MIME write them: VisualGLM's own server accepted them
        data = base64.b64decode(_WS.sub("", s), validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(f"{what}: invalid base64") from None
    return decode_image(data, what, max_pixels)


def load_url(url: str, what: str = "image_url", max_pixels: int = DEFAULT_MAX_PIXELS,
             local_root: str | Path | None = None, max_bytes: int = 64 << 20) -> Image.Image:
    """A data: URL, or a file: URL when ``local_root`` allows it (only files inside that folder)."""
    if not isinstance(url, str) or not url:
        raise ImageInputError(f"{what}: expected a URL string")
    if url.startswith("data:"):
        return decode_base64(url, what, max_pixels)
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced '[' (IPv6 host syntax)
        raise ImageInputError(f"{what}: not a valid URL") from None
    if scheme == "file":
        return _local_file(url, what, max_pixels, local_root, max_bytes)
    if scheme in ("http", "https"):
        raise ImageInputError(f"{what}: remote URLs are not fetched; send the image as a data: URL "
                              "(data:image/png;base64,...)")
    raise ImageInputError(f"{what}: unsupported URL scheme {scheme or url[:20]!r}; use a data: URL")


def _local_file(url: str, what: str, max_pixels: int, local_root, max_bytes: int) -> Image.Image:
    """A file: URL inside ``local_root``. Messages show the path as the client gave it, never the resolved
    server path or a symlink's target."""
    if local_root is None:
        raise ImageInputError(f"{what}: file: URLs are disabled on this server (start it with "
                              "--allow-local-files DIR)")
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ImageInputError(f"{what}: file: URLs must name a file on this server (file:///path), "
                              f"not host {parts.netloc[:60]!r}")
    given = urllib.parse.unquote(parts.path)
    if parts.fragment and not parts.fragment.isdigit():  # a '#' in a file name is %23 in a URL
        raise ImageInputError(f"{what}: #{parts.fragment[:40]}: after '#' a file: URL takes a wafer index K (a "
                              "number); write a '#' that is part of the file name as %23")
    if "\0" in given:
        raise ImageInputError(f"{what}: the file path contains a NUL byte")
    try:
        path, root = Path(given).resolve(), Path(local_root).resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loop, name too long, ...
        raise ImageInputError(f"{what}: {given[:200]}: cannot be resolved") from None
    if not path.is_relative_to(root):
        raise ImageInputError(f"{what}: {given[:200]} is outside the allowed folder")
    if not path.is_file():
        raise ImageInputError(f"{what}: {given[:200]}: no such file")
    try:
        if path.stat().st_size > max_bytes:
            raise ImageTooLarge(f"{what}: {given[:200]} is over {max_bytes:,} bytes")
        data = path.read_bytes()
    except OSError as e:
        raise ImageInputError(f"{what}: {given[:200]}: cannot be read ({e.strerror})") from None
    if parts.fragment:  # FILE#K: wafer K of a multi-wafer map file, as on the command line
        img = _from_domains((data, int(parts.fragment)), what, max_pixels, "decode_upload_at")
        if img is None:
            raise ImageInputError(f"{what}: #{parts.fragment}: selects a wafer of a map file, and no domain reads "
                                  "this file as one")
        return img
    return decode_image(data, what, max_pixels)
