"""DICOM -> 8-bit grayscale PIL image, displayed the way a viewer would show it.

Pipeline (PS3.3 C.11): Modality LUT / rescale -> VOI LUT or window centre/width (first one in the file) ->
scale the VOI *output range* (not the data's min/max, so the file's window is honoured) to 0..255 ->
invert MONOCHROME1 (where low values mean white). Without any VOI information the data's min..max is stretched.
Multi-frame files give frame 0; colour files are converted to "L".
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError

# Transfer syntaxes pydicom cannot decode alone -> what to pip-install.
_CODECS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Baseline (Pillow also works for 8-bit)
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
}


def is_dicom(path: str | Path) -> bool:
    """True for a '.dcm'/'.dicom' name or the 'DICM' magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise UserError("reading DICOM needs pydicom: pip install 'domainvlm[radiology]' (or pip install "
                        "pydicom)") from None
    return pydicom


def _pixels(ds, path):
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as e:
        if ts is not None and ts.is_compressed:
            pkgs = _CODECS.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
            raise UserError(f"{path}: pixel data is compressed as '{ts.name}' ({ts}) and no installed decoder "
                            f"handles it; install one: pip install {pkgs}  (or: pip install python-gdcm)") from None
        raise UserError(f"{path}: cannot decode pixel data ({e})") from None
    except AttributeError:
        raise UserError(f"{path}: DICOM file has no pixel data (not an image, or truncated)") from None
    except (ValueError, EOFError, OSError) as e:
        raise UserError(f"{path}: corrupt or truncated DICOM pixel data ({e})") from None


def _voi_output_range(ds) -> tuple[float, float] | None:
    """Output range of the VOI stage (mirrors pydicom's apply_windowing), or None if no VOI applies."""
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        if isinstance(item.LUTData, (list, tuple)):  # the table's own values: descriptors are often wrong
            return float(min(item.LUTData)), float(max(item.LUTData))
        return 0.0, 2.0 ** int(item.LUTDescriptor[2]) - 1
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, 2.0 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, 2.0 ** bits - 1
    else:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    slope, icpt = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and icpt is not None:
        lo, hi = lo * float(slope) + float(icpt), hi * float(slope) + float(icpt)
    return min(lo, hi), max(lo, hi)


def _to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    arr = arr.astype(np.float64)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


class DicomTooLarge(UserError):
    """The header declares more pixels than the caller accepts."""


def _read(pydicom, src, path, max_pixels: int):
    """(dataset, pixel array); with ``max_pixels`` the header is checked before any pixels are read."""
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(src, stop_before_pixels=bool(max_pixels))
        if max_pixels:
            if "Rows" not in ds or "Columns" not in ds:
                raise UserError(f"{path}: unreadable DICOM (no image size in the header: not an image, or corrupt)")
            w, h = int(ds.Columns), int(ds.Rows)
            if w * h > max_pixels:
                raise DicomTooLarge(f"{path}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
            if isinstance(src, io.BytesIO):
                src.seek(0)
            ds = pydicom.dcmread(src)
    except InvalidDicomError:
        raise UserError(f"{path}: not a DICOM file (no 'DICM' header)") from None
    except UserError:
        raise
    except Exception as e:  # truncated headers surface as EOFError, struct.error, ValueError, ...
        # the parser's own words for a local file; an upload gets no internals (they help an attacker only)
        why = "corrupt or truncated header" if isinstance(src, io.BytesIO) else f"{e.__class__.__name__}: {e}"
        raise UserError(f"{path}: unreadable DICOM ({why})") from None
    return ds, _pixels(ds, path)


def read_dicom(path: str | Path | bytes, name: str | None = None, max_pixels: int = 0) -> Image.Image:
    """Read a DICOM image (a path, or the file's bytes) as an 8-bit 'L' PIL image (see module doc).

    ``name`` labels errors for bytes input; ``max_pixels`` > 0 rejects larger images from the header alone,
    before any pixel data is decoded (untrusted uploads), with :class:`DicomTooLarge`.
    """
    pydicom = _import_pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if isinstance(path, (bytes, bytearray)):
        src, path = io.BytesIO(path), name or "DICOM data"
    else:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        src = path
    with warnings.catch_warnings():  # pydicom's warnings (truncation, odd VRs) print as source lines before
        warnings.simplefilter("ignore", UserWarning)  # our one-line error; what matters becomes a UserError
        ds, arr = _read(pydicom, src, path, max_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        arr = arr[0]
    raw = arr
    if spp > 1:  # colour (pydicom already converted YBR to RGB); viewers show it as is
        rgb = arr if arr.dtype == np.uint8 else _to_uint8(arr, float(arr.min()), float(arr.max()))
        return Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB").convert("L")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        arr = apply_modality_lut(arr, ds)
        rng = _voi_output_range(ds)
        if rng is not None:
            arr = apply_voi_lut(arr, ds, index=0)
    except (ValueError, AttributeError, IndexError, TypeError):
        rng = None  # broken VOI attributes (e.g. window width 0): fall back to the data range
        arr = apply_modality_lut(raw, ds)
    lo, hi = rng if rng is not None else (float(np.min(arr)), float(np.max(arr)))
    out = _to_uint8(arr, lo, hi)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(np.ascontiguousarray(out), "L")
