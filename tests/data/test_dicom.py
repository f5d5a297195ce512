"""DICOM reading (data/dicom.py) on the real chest CR RG1_UNCR.dcm from pydicom-data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domainvlm.data.dicom import is_dicom, read_dicom
from domainvlm.errors import UserError

pydicom = pytest.importorskip("pydicom")


def _testfile(name: str):
    from pydicom.data import get_testdata_file

    try:
        p = get_testdata_file(name)
    except Exception:  # network fetch refused / pydicom-data absent
        p = None
    if not p:
        pytest.skip(f"{name} not available (pip install pydicom-data)")
    return p


@pytest.fixture(scope="module")
def rg1():
    path = _testfile("RG1_UNCR.dcm")
    return path, pydicom.dcmread(path)


def _regions(a):
    h, w = a.shape
    centre = a[h // 4:3 * h // 4, 2 * w // 5:3 * w // 5].mean()  # mediastinum / spine column
    lungs = (a[h // 4:3 * h // 4, w // 6:w // 3].mean() + a[h // 4:3 * h // 4, 2 * w // 3:5 * w // 6].mean()) / 2
    return centre, lungs, a[: h // 10].mean(), a[-h // 10:].mean()


def test_chest_cr_display(rg1):
    path, ds = rg1
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15  # the case being tested
    im = read_dicom(path)
    assert im.mode == "L" and im.size == (ds.Columns, ds.Rows)
    a = np.asarray(im).astype(float)
    centre, lungs, top, bottom = _regions(a)
    assert lungs < centre - 25  # aerated lungs dark, mediastinum bright: MONOCHROME1 was inverted
    assert bottom > top + 30  # abdomen / diaphragm (dense, bright) at the bottom: not flipped
    # same orientation as the stored pixel array: the display is a monotone decreasing map of raw values
    raw = ds.pixel_array.astype(float)
    assert np.corrcoef(raw[::8, ::8].ravel(), a[::8, ::8].ravel())[0, 1] < -0.99
    # the file's window (centre 15000, width 30000) maps to 0..255: wide use of the range, no clipping pile-up
    assert a.max() - a.min() > 200 and np.percentile(a, 99) - np.percentile(a, 1) > 100
    assert (a == 0).mean() < 0.01 and (a == 255).mean() < 0.01


def test_monochrome2_variant_is_inverted(rg1, tmp_path):
    path, _ = rg1
    ds2 = pydicom.dcmread(path)
    ds2.PhotometricInterpretation = "MONOCHROME2"
    p2 = tmp_path / "mono2.dcm"
    ds2.save_as(p2)
    a1, a2 = np.asarray(read_dicom(path)).astype(int), np.asarray(read_dicom(p2)).astype(int)
    assert np.array_equal(a1, 255 - a2)
    centre, lungs, *_ = _regions(a2)
    assert lungs > centre  # shown as MONOCHROME2, this CR looks like a negative


def test_rescale_and_window_from_the_file(rg1, tmp_path):
    path, _ = rg1
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 8000, 4000  # narrow window: values outside saturate
    p = tmp_path / "win.dcm"
    ds.save_as(p)
    raw = ds.pixel_array.astype(float)
    a = np.asarray(read_dicom(p)).astype(float)
    assert (a[raw <= 6000] == 0).all() and (a[raw > 10000] == 255).all()
    mid = (raw > 7000) & (raw < 9000)
    assert abs(a[mid].mean() - ((raw[mid] - 6000) / 4000 * 255).mean()) < 2
    # rescale slope/intercept moves the window along (Modality LUT before VOI)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.save_as(p)
    b = np.asarray(read_dicom(p)).astype(float)
    assert (b[raw * 2 - 1000 > 10000] == 255).all() and (b[raw * 2 - 1000 <= 6000] == 0).all()
    # no VOI at all: the data range is stretched to 0..255
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(p)
    c = np.asarray(read_dicom(p))
    assert c.min() == 0 and c.max() == 255


def test_multiframe_takes_first_frame():
    path = _testfile("emri_small.dcm")  # 10 frames of 64x64 MR
    ds = pydicom.dcmread(path)
    im = read_dicom(path)
    assert im.size == (64, 64)
    frame0 = ds.pixel_array[0].astype(float)
    assert np.corrcoef(frame0.ravel(), np.asarray(im).astype(float).ravel())[0, 1] > 0.99


def test_malformed_files(rg1, tmp_path):
    path, _ = rg1
    data = Path(path).read_bytes()
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"hello world, not a DICOM file" * 20)
    with pytest.raises(UserError, match="garbage.dcm: not a DICOM file"):
        read_dicom(garbage)
    for cut, what in ((len(data) // 2, "truncated"), (1000, "no pixel data|truncated"), (140, "")):
        t = tmp_path / f"cut{cut}.dcm"
        t.write_bytes(data[:cut])
        with pytest.raises(UserError, match=f"cut{cut}.dcm: .*({what})" if what else f"cut{cut}.dcm"):
            read_dicom(t)
    with pytest.raises(UserError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")


def test_truncated_compressed_file_is_one_error_without_warnings(rg1, tmp_path):
    """A cut RLE file (pydicom encodes RLE itself): pydicom's UserWarning printed two source lines above
    the error line."""
    import warnings

    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(rg1[0])
    ds.compress(RLELossless)
    full = tmp_path / "rle.dcm"
    ds.save_as(full)
    assert np.array_equal(np.asarray(read_dicom(full)), np.asarray(read_dicom(rg1[0])))  # RLE reads as is
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[:3000])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="cut.dcm: .*truncated"):
            read_dicom(cut)
    assert [str(w.message) for w in seen] == []


def test_compressed_without_codec_names_syntax_and_package():
    path = _testfile("JPEG-LL.dcm")  # JPEG Lossless: needs pylibjpeg-libjpeg or gdcm
    try:
        read_dicom(path)
    except UserError as e:
        msg = str(e)
        assert "JPEG Lossless" in msg and "1.2.840.10008.1.2.4.70" in msg and "pip install pylibjpeg" in msg
    else:  # a decoder is installed here: the file simply decodes
        pass


def test_is_dicom(rg1, tmp_path):
    path, _ = rg1
    copy = tmp_path / "noext"
    copy.write_bytes(Path(path).read_bytes()[:200])
    assert is_dicom(copy) and is_dicom(tmp_path / "x.DCM") and not is_dicom(tmp_path / "x.png")


def test_uploaded_dicom_bytes(rg1):
    """The HTTP/upload path decodes DICOM bytes like a file, checks size from the header, names the field."""
    from domainvlm.inference.image_input import ImageInputError, ImageTooLarge, decode_image

    path, ds = rg1
    data = Path(path).read_bytes()
    im = decode_image(data, "messages[0].image")
    assert im.mode == "RGB" and np.array_equal(np.asarray(im.convert("L")), np.asarray(read_dicom(path)))
    with pytest.raises(ImageTooLarge, match=r"messages\[0\]\.image: image is \d+x\d+") as e:
        decode_image(data, "messages[0].image", max_pixels=int(ds.Rows) * int(ds.Columns) - 1)
    assert e.value.status == 413
    with pytest.raises(ImageInputError, match=r"^upload: unreadable DICOM") as e:
        decode_image(data[:600], "upload")
    assert e.value.status == 400
