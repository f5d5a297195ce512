"""The native PhysioNet MIMIC-CXR / MIMIC-CXR-JPG tree -> report records (domains/radiology/mimic_cxr.py)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from domainvlm import domains
from domainvlm.data.sources import load_any
from domainvlm.domains.radiology.mimic_cxr import report_sections
from domainvlm.domains.radiology.sources import load_xray
from domainvlm.errors import UserError

# Written in the layout of the release's reports (a FINAL REPORT line, upper-case headings, the text indented
# by one space, '___' where de-identification removed a name or date); the wording is made up.
FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.  Clips project over the left lung.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
IMPRESSION_ONLY = """                                 FINAL REPORT
 WET READ: ___ ___ 10:15 AM
  No pneumonia.

 INDICATION:  Cough.

 IMPRESSION:  Compared to prior, mild pulmonary vascular congestion has improved.
 No new consolidation.

 NOTIFICATION:  The findings were discussed with Dr. ___ at 10:30.
"""
NEITHER = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___

 COMPARISON:  ___.

 Portable semi-upright chest radiograph was obtained; the study is limited by rotation.
"""
REPORTS = {("10000032", "50414267"): FULL, ("10000032", "53189527"): IMPRESSION_ONLY,
           ("10000764", "57375967"): NEITHER, ("11000011", "51029426"): FULL, ("12000000", "58000000"): FULL}
# dicom_id, study, subject, split, view; the lateral is listed first; dicoms marked '-' have no file on disk
IMAGES = [("lat0032a", "50414267", "10000032", "train", "LATERAL"), ("pa0032a", "50414267", "10000032", "train", "PA"),
          ("ap0032b", "53189527", "10000032", "train", "AP"), ("pa0764", "57375967", "10000764", "train", "PA"),
          ("-pa1011", "51029426", "11000011", "validate", "PA"), ("pa2000", "58000000", "12000000", "test", "PA"),
          ("-ll2000", "58000000", "12000000", "test", "LL")]
CHEXPERT = "subject_id,study_id,Atelectasis,Cardiomegaly,No Finding,Pleural Effusion\n" \
           "10000032,50414267,,,1.0,\n10000032,53189527,-1.0,1.0,,0.0\n"


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _tree(root: Path, reports=True, images=True, csvs=True) -> Path:
    files = root / "files"
    for (subj, study), text in REPORTS.items():
        d = files / f"p{subj[:2]}" / f"p{subj}"
        d.mkdir(parents=True, exist_ok=True)
        if reports:
            (d / f"s{study}.txt").write_text(text)
    if images:
        for dicom, study, subj, _, _ in IMAGES:
            d = files / f"p{subj[:2]}" / f"p{subj}" / f"s{study}"
            d.mkdir(exist_ok=True)
            if not dicom.startswith("-"):
                Image.new("L", (8, 8), 128).save(d / f"{dicom}.jpg")
    if csvs:
        rows = [(d.lstrip("-"), st, sj, sp, v) for d, st, sj, sp, v in IMAGES]
        _gz(root / "mimic-cxr-2.0.0-split.csv.gz",
            "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{st},{sj},{sp}\n" for d, st, sj, sp, _ in rows))
        _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz",
            "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
            + "".join(f"{d},{sj},{st},CHEST (PA AND LAT),{v},8,8\n" for d, st, sj, _, v in rows))
        _gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT)
    return root


def test_sections_findings_impression_only_and_neither():
    s = report_sections(FULL)
    assert s["findings"] == ("There is no focal consolidation, pleural effusion or pneumothorax. The "
                             "cardiomediastinal silhouette is normal. Clips project over the left lung.")
    assert s["impression"] == "No acute cardiopulmonary process."
    assert s["examination"] == "CHEST (PA AND LAT)" and s["comparison"] == "None."
    assert s["indication"] == "___F with new onset ascites // eval for infection"
    s = report_sections(IMPRESSION_ONLY)  # the wet read (before the first heading) and NOTIFICATION dropped
    assert "findings" not in s
    assert s["impression"] == ("Compared to prior, mild pulmonary vascular congestion has improved. "
                               "No new consolidation.")
    assert not {"findings", "impression"} & set(report_sections(NEITHER))
    assert report_sections(" FINDINGS AND IMPRESSION:  Normal chest.\n") == {"impression": "Normal chest."}


def test_tree_to_records(tmp_path, caplog):
    root = _tree(tmp_path / "mimic-cxr-jpg")
    extra = root / "files/p10/p10000032/s59999999"  # a study the split CSV does not list: left out
    extra.mkdir()
    Image.new("L", (8, 8)).save(extra / "pa9999.jpg")
    extra.with_suffix(".txt").write_text(FULL)
    with caplog.at_level(logging.WARNING):
        recs = load_xray(root)
    by_id = {r.id: r for r in recs}
    assert list(by_id) == ["s50414267", "s53189527", "s58000000"]  # subject, study order
    r = by_id["s50414267"]
    r.check()
    assert r.labels["findings"].startswith("There is no focal consolidation") and \
        r.labels["impression"] == "No acute cardiopulmonary process."
    assert r.labels["report"] == f"{r.labels['findings']} {r.labels['impression']}" == r.messages[-1]["content"]
    files = (root / "files/p10/p10000032/s50414267").resolve()
    assert r.images == [str(files / "pa0032a.jpg"), str(files / "lat0032a.jpg")]  # frontal first
    assert r.messages[0]["content"].count("<image>") == 2
    assert r.meta == {"source": "mimic-cxr", "split": "train", "lang": "en", "study_id": 50414267,
                      "subject_id": 10000032, "views": ["PA", "LATERAL"], "indication": r.meta["indication"],
                      "comparison": "None.", "examination": "CHEST (PA AND LAT)"}
    assert r.labels["chexpert"] == {"No Finding": 1, "Cardiomegaly": None, "Pleural Effusion": None,
                                    "Atelectasis": None}
    io = by_id["s53189527"]
    assert io.labels["findings"] is None and io.labels["report"] == io.labels["impression"]
    assert io.labels["chexpert"]["Atelectasis"] == -1 and io.labels["chexpert"]["Pleural Effusion"] == 0
    t = by_id["s58000000"]  # one of its two images is missing: kept with the other; test split
    assert t.meta["split"] == "test" and len(t.images) == 1 and "chexpert" not in t.labels
    warn = [m for m in caplog.messages if "skipped" in m]
    assert len(warn) == 1 and "\n" not in warn[0]
    assert "1 study without FINDINGS or IMPRESSION" in warn[0]  # s57375967
    assert "1 study without an image file on disk" in warn[0]  # s51029426 (validate): its only image is gone
    assert "1 study not in mimic-cxr-2.0.0-split.csv.gz" in warn[0]
    assert "2 image file(s) that the CSVs name but are not on disk" in warn[0]
    assert [r.id for r in load_xray(root, split="test")] == ["s58000000"]


def test_detected_as_folder_files_folder_or_split_csv_and_validate_is_val(tmp_path):
    root = _tree(tmp_path / "m")
    (root / "files/p11/p11000011/s51029426/pa1011.jpg").parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(root / "files/p11/p11000011/s51029426/pa1011.jpg")
    for src in (root, root / "files", root / "mimic-cxr-2.0.0-split.csv.gz"):
        assert domains.sniff(src).name == "report", src  # not the classify domain's class folders p10, p11...
        recs = load_any(src)
        assert {r.id: r.meta["split"] for r in recs} == {"s50414267": "train", "s53189527": "train",
                                                          "s51029426": "val", "s58000000": "test"}
    assert [r.id for r in load_any(root, split="val")] == ["s51029426"]
    part = root / "files/p10"  # one part of the download (p10 of p10..p19): only its studies
    assert domains.sniff(part).name == "report"
    assert [r.id for r in load_any(part)] == ["s50414267", "s53189527"]


def test_data_build_writes_split_files(tmp_path, capsys):
    from domainvlm.cli import main

    root = _tree(tmp_path / "m")
    assert main(["data", "build", "--source", str(root), "--out", str(tmp_path / "out"), "--qa-per-report", "1"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out/train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s50414267", "s53189527"] and rows[0]["labels"]["chexpert"]["No Finding"] == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl")) == ["test.jsonl", "train.jsonl"]


def test_reports_and_images_in_two_folders(tmp_path):
    jpg, rep = _tree(tmp_path / "mimic-cxr-jpg", reports=False), _tree(tmp_path / "mimic-cxr-reports", images=False,
                                                                       csvs=False)
    named = load_xray(rep, image_root=jpg)  # --image-root names the other folder
    assert [r.id for r in named] == ["s50414267", "s53189527", "s58000000"]
    assert named[0].images[0].startswith(str(jpg.resolve()))
    assert [r.id for r in load_xray(jpg)] == [r.id for r in named]  # or it is found beside the source


def test_without_csvs_split_from_nowhere_images_from_disk(tmp_path):
    root = _tree(tmp_path / "m", csvs=False)
    recs = load_xray(root / "files")
    r = {x.id: x for x in recs}["s50414267"]
    assert [Path(p).name for p in r.images] == ["lat0032a.jpg", "pa0032a.jpg"]  # no ViewPosition: name order
    assert r.meta["split"] is None and "views" not in r.meta and "chexpert" not in r.labels


def test_missing_parts_are_one_line_errors(tmp_path):
    root = _tree(tmp_path / "m")
    split = root / "mimic-cxr-2.0.0-split.csv.gz"
    _gz(split, "dicom_id,study_id,subject_id\npa0032a,50414267,10000032\n")
    with pytest.raises(UserError, match=r"^.*mimic-cxr-2\.0\.0-split\.csv\.gz:1: column 'split' missing"):
        load_xray(root)
    _gz(split, "dicom_id,study_id,subject_id,split\npa0032a,50414267,10000032,training\n")
    with pytest.raises(UserError, match=r"split\.csv\.gz:2: field 'split': 'training' is not train, validate"):
        load_xray(root)
    split.write_bytes(gzip.compress(b"dicom_id,study_id,subject_id,split\n" * 50)[:40])  # cut short
    with pytest.raises(UserError, match=r"split\.csv\.gz: not a readable gzip file") as e:
        load_any(split)
    assert "\n" not in str(e.value)
    split.unlink()
    _gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "subject_id,study_id,Edema\n10000032,50414267,yes\n")
    with pytest.raises(UserError, match=r"chexpert\.csv\.gz:2: field 'Edema': 'yes' is not 1\.0, 0\.0, -1\.0"):
        load_xray(root)
    with pytest.raises(UserError, match="no MIMIC-CXR report"):
        load_xray(_tree(tmp_path / "a" / "jpg-only", reports=False))
    with pytest.raises(UserError, match="no MIMIC-CXR-JPG image"):
        load_xray(_tree(tmp_path / "sub" / "reports-only", images=False))
    with pytest.raises(UserError, match="English"):
        load_xray(root, lang="zh")
