"""Chest X-ray report sources -> records (domains/radiology/sources.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainvlm.data.formats import check_images
from domainvlm.data.record import IMAGE_TOKEN
from domainvlm.domains.radiology.sources import load_xray
from domainvlm.errors import UserError

# Structure of an IU-Xray / OpenI ecgen-radiology report (NLMCXR_reports.tgz: 1.xml ... 3955.xml), modelled on
# report 1.xml; author list and image features shortened.
OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR1"/>
   <pmcId id="1"/>
   <docSource>CXR</docSource>
   <IUXRId id="1"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Journal><JournalIssue><PubDate><Year>2013</Year><Month>08</Month><Day>01</Day></PubDate>
         </JournalIssue></Journal>
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Positive TB test</AbstractText>
            <AbstractText Label="FINDINGS">The cardiac silhouette and mediastinum size are within normal limits.
 There is no pulmonary edema. There is no focal consolidation. There are no XXXX of a pleural effusion.
 There is no evidence of pneumothorax.</AbstractText>
            <AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
         </Abstract>
         <Affiliation>Indiana University School of Medicine, Indianapolis, IN</Affiliation>
         <AuthorList CompleteYN="Y"><Author ValidYN="Y"><LastName>Kohli</LastName><ForeName>Marc</ForeName>
            <Initials>MD</Initials></Author></AuthorList>
         <Language>eng</Language>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>normal</major>
   </MeSH>
   <parentImage id="CXR1_1_IM-0001-3001">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/CXR1_1_IM-0001-3001.jpg</url>
         <imgModality>7</imgModality>
         <region type=""><globalImageFeatures><CEDD>f2p0k1414</CEDD></globalImageFeatures></region>
      </panel>
   </parentImage>
   <parentImage id="CXR1_1_IM-0001-4001">
      <figureId>F2</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/CXR1_1_IM-0001-4001.jpg</url></panel>
   </parentImage>
</eCitation>
"""
# An image-less report (the collection has some): skipped.
OPENI_NO_IMAGE = """<eCitation><uId id="CXR2"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">Borderline cardiomegaly.</AbstractText><AbstractText Label="IMPRESSION"/>
</Abstract></Article></MedlineCitation><MeSH><major>Cardiomegaly/borderline</major></MeSH></eCitation>"""

IU = "iu-xray-samples"


def _check_report_record(r, n_images=1):
    r.check()
    assert r.labels["task"] == "report" and r.labels["report"] == r.messages[-1]["content"]
    assert r.messages[0]["content"].count(IMAGE_TOKEN) == n_images == len(r.images)
    assert all(Path(p).is_absolute() for p in r.images)
    assert {"source", "split", "lang"} <= set(r.meta)


def test_pairs_jsonl(shared_data):
    src = shared_data / IU / "pairs_with_original_reports.jsonl"
    recs = load_xray(src)
    assert len(recs) == 10
    for r in recs:
        _check_report_record(r)
    check_images(recs, src)  # every image of the pairs file is in the shared images folder
    r = {x.id: x for x in recs}["2882_1"]
    assert r.labels["findings"].startswith("There are no focal areas of consolidation")
    assert r.labels["impression"] == "1. No acute cardiopulmonary abnormality. 2. Mild cardiomegaly, stable."
    assert r.labels["report"] == f"{r.labels['findings']} {r.labels['impression']}"
    assert r.meta == {"source": "iu-pairs", "split": "val", "lang": "en", "iu_report_id": 2882,
                      "mesh_major": ["Cardiomegaly/mild", "Thoracic Vertebrae/degenerative"],
                      "indication": "XXXX-year-old female, abdominal pain."}
    zh = load_xray(src, lang="zh", split="test")
    assert {x.id for x in zh} == {"1425_2", "2577_1", "2_1", "2_2"}
    assert all(x.meta["lang"] == "zh" and "胸" in x.labels["report"] for x in zh)


def test_r2gen_blank_test_key_and_multi_image(shared_data):
    src = shared_data / IU / "r2gen_annotation.json"
    recs = load_xray(src)
    assert len(recs) == 2955
    from collections import Counter

    assert Counter(r.meta["split"] for r in recs) == {"train": 2069, "val": 296, "test": 590}
    test = load_xray(src, split="test")
    assert len(test) == 590 and test[0].id == "CXR3030_IM-1405"
    _check_report_record(test[0], n_images=2)
    assert test[0].images[0].endswith("CXR3030_IM-1405/0.png") and test[0].meta["source"] == "r2gen-iu-xray"
    with pytest.raises(UserError, match="English"):
        load_xray(src, lang="zh")


def test_r2gen_mimic_layout_and_errors(tmp_path):
    (tmp_path / "images").mkdir()
    row = {"id": "02aa804e", "study_id": 50414267, "subject_id": 10000032,
           "report": "There is no focal consolidation.", "split": "train",
           "image_path": ["p10/p10000032/s50414267/02aa804e.jpg"]}
    src = tmp_path / "annotation.json"
    src.write_text(json.dumps({"train": [row], "val": [], "test": []}))
    (r,) = load_xray(src)
    _check_report_record(r)
    assert r.meta == {"source": "r2gen-mimic-cxr", "split": "train", "lang": "en", "study_id": 50414267,
                      "subject_id": 10000032}
    assert r.images == [str((tmp_path / "images/p10/p10000032/s50414267/02aa804e.jpg").absolute())]
    del row["report"]
    src.write_text(json.dumps({"train": [row]}))
    with pytest.raises(UserError, match=r"record train\[0\]: field 'report': missing"):
        load_xray(src)


@pytest.mark.parametrize("name, lang", [("xrayglm_openi_en_excerpt.json", "en"),
                                        ("xrayglm_openi_zh_excerpt.json", "zh")])
def test_xrayglm(shared_data, name, lang):
    recs = load_xray(shared_data / IU / name, split="train")
    assert len(recs) == 50
    for r in recs:
        _check_report_record(r)
        assert r.meta == {"source": "xrayglm", "split": "train", "lang": lang}
    r = {x.id: x for x in recs}["2882_1"]
    assert Path(r.images[0]) == (shared_data / IU / "images/2882_1.png").resolve()


def test_xrayglm_errors(tmp_path):
    src = tmp_path / "x.json"
    src.write_text(json.dumps({"annotations": [{"image_id": "1_1"}]}))
    with pytest.raises(UserError, match=r"record 0: field 'caption': missing"):
        load_xray(src)
    # a blank caption / report would become an empty training answer and an empty reference
    src.write_text(json.dumps({"annotations": [{"image_id": "1_1", "caption": "Normal."},
                                               {"image_id": "1_2", "caption": "  "}]}))
    with pytest.raises(UserError, match=r"x.json: record 1: field 'caption': empty"):
        load_xray(src)
    src.write_text(json.dumps({"train": [{"id": "CXR1", "report": "", "image_path": ["CXR1/0.png"]}]}))
    with pytest.raises(UserError, match=r"record train\[0\]: field 'report': empty"):
        load_xray(src)
    src.write_text(json.dumps({"train": [{"id": "CXR1", "report": "Normal.", "image_path": ["CXR1/0.png", ""]}]}))
    with pytest.raises(UserError, match=r"record train\[0\]: field 'image_path': must be a non-empty list"):
        load_xray(src)  # '' resolved to the image folder itself


def test_openi_xml_file_and_folder(tmp_path):
    reports, images = tmp_path / "ecgen-radiology", tmp_path / "NLMCXR_png"
    reports.mkdir()
    images.mkdir()
    (reports / "1.xml").write_text(OPENI_XML, encoding="utf-8")
    (reports / "2.xml").write_text(OPENI_NO_IMAGE, encoding="utf-8")
    (images / "CXR1_1_IM-0001-3001.png").write_bytes(b"x")
    (r,) = load_xray(reports, image_root=images)
    _check_report_record(r, n_images=2)
    assert r.id == "CXR1"
    assert r.labels["findings"].startswith("The cardiac silhouette and mediastinum size are within normal limits. "
                                           "There is no pulmonary edema.")
    assert r.labels["impression"] == "Normal chest x-XXXX."
    assert r.meta["indication"] == "Positive TB test" and r.meta["mesh_major"] == ["normal"]
    assert r.images[0] == str((images / "CXR1_1_IM-0001-3001.png").resolve())
    with pytest.raises(UserError, match="1 image file"):  # the lateral view is missing
        check_images([r], "x")
    (single,) = load_xray(reports / "1.xml", image_root=images, split="test")
    assert single.meta["split"] == "test"
    with pytest.raises(UserError, match="no usable report"):
        load_xray(reports / "2.xml")
    (reports / "images").mkdir()  # without --image-root: the images/ folder beside the reports, as for JSON
    (reports / "images" / "CXR1_1_IM-0001-3001.png").write_bytes(b"x")
    assert load_xray(reports)[0].images[0] == str((reports / "images" / "CXR1_1_IM-0001-3001.png").resolve())
    assert load_xray(reports / "1.xml")[0].images[0].startswith(str((reports / "images").resolve()))
    (reports / "3.xml").write_text("<eCitation><uId")
    with pytest.raises(UserError, match="3.xml: malformed XML"):
        load_xray(reports)


def test_sharegpt_through_load_xray_and_unknown(shared_data, tmp_path):
    recs = load_xray(shared_data / IU / "llamafactory_sharegpt_excerpt.json")
    assert len(recs) == 10
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(UserError, match="not a recognised X-ray report format"):
        load_xray(bad)
    with pytest.raises(UserError, match="no such file"):
        load_xray(tmp_path / "missing.json")


def test_report_prompted_sharegpt_and_llava_are_report_data(shared_data, tmp_path):
    """XrayQwen2VL's LLaMA-Factory file (and a LLaVA file asking a report prompt) reads as report records:
    eval can score it and --qa-per-report builds on it; other sharegpt stays as it is."""
    from domainvlm.data.sources import load_any
    from domainvlm.evaluate.runner import task_of

    recs = load_any(shared_data / IU / "llamafactory_sharegpt_excerpt.json")
    assert task_of(recs) == "report" and {r.labels["lang"] for r in recs} == {"zh"}
    assert recs[0].labels["report"] == recs[0].messages[1]["content"]
    assert all(len(r.messages) == 4 for r in load_any(shared_data / IU / "llamafactory_sharegpt_excerpt.json",
                                                       qa_per_report=1))
    llava = tmp_path / "llava.json"
    llava.write_text(json.dumps([{"id": "2_1", "image": "2_1.png", "conversations": [
        {"from": "human", "value": "<image>\n详细描述这张胸部X光片的诊断结果"},
        {"from": "gpt", "value": "心脏大小正常，肺部清晰。"}]}], ensure_ascii=False), encoding="utf-8")
    assert task_of(load_any(llava)) == "report"
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"conversations": [{"from": "human", "value": "<image>What is this?"},
                                                    {"from": "gpt", "value": "A cat."}], "images": ["c.png"]}]))
    assert load_any(other)[0].labels == {}


def test_r2gen_list_decides_the_split(tmp_path, caplog):
    """R2Gen reads ann[split]: a record moved to another list keeps a stale 'split'; the list wins."""
    row = {"id": "CXR1_1_IM-0001", "report": "Normal chest.", "image_path": ["CXR1_1_IM-0001/0.png"]}
    src = tmp_path / "annotation.json"
    src.write_text(json.dumps({"train": [{**row, "split": "test"}], "    ": [{**row, "id": "CXR2", "split": "test"}],
                               "all": [{**row, "id": "CXR3", "split": "val"}]}))
    assert {r.id: r.meta["split"] for r in load_xray(src)} == {"CXR1_1_IM-0001": "train", "CXR2": "test",
                                                               "CXR3": "val"}
    assert "1 record(s) carry a 'split' other than the list" in caplog.text
    assert [r.id for r in load_xray(src, split="test")] == ["CXR2"]


def test_utf8_bom_sources(shared_data, tmp_path):
    """Windows Notepad saves UTF-8 with a BOM: such an XrayGLM zh file or R2Gen annotation was 'not a
    recognised data source'."""
    from domainvlm.data.sources import load_any

    bom = b"\xef\xbb\xbf"
    zh = tmp_path / "openi-zh.json"
    zh.write_bytes(bom + (shared_data / IU / "xrayglm_openi_zh_excerpt.json").read_bytes())
    recs = load_any(zh)
    assert len(recs) == 50 and {r.meta["lang"] for r in recs} == {"zh"}
    ann = tmp_path / "annotation.json"
    ann.write_bytes(bom + json.dumps({"train": [{"id": "CXR1", "report": "Normal.", "image_path": ["a.png"]}]})
                    .encode())
    assert [r.meta["split"] for r in load_any(ann)] == ["train"]
