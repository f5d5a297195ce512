"""Classify domain sources: ImageFolder (flat / with splits), CSV and JSONL label lists, taxonomy checks, and
bad input as one line naming the file, row or field with nothing written."""

import json

import pytest
from classify_helpers import image_folder, taxonomy_file

from domainvlm.cli import main
from domainvlm.domains import get, sniff
from domainvlm.errors import UserError


def read(path, **kw):
    return get("classify").read_source(path, **kw)


def test_image_folder_with_splits_and_derived_taxonomy(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=3)
    assert sniff(root).name == "classify"
    recs = read(root, langs=("en",))
    assert len(recs) == 12
    assert {r.meta["split"] for r in recs} == {"train", "val"}
    assert {tuple(r.labels["labels"]) for r in recs} == {("dots",), ("stripes",)}
    assert all(r.labels["task"] == "classify" and r.labels["taxonomy"] == "toy" for r in recs)
    r = next(r for r in recs if r.labels["labels"] == ["stripes"])
    assert r.messages[1]["content"] == "Class: stripes"  # derived taxonomy: no description
    assert r.images[0].endswith(".png") and r.images[0].startswith("/")


def test_flat_image_folder_has_no_split(tmp_path):
    root = image_folder(tmp_path / "flat", per_class=2, splits=None, ext="jpg")
    recs = read(root)
    assert len(recs) == 4 and {r.meta["split"] for r in recs} == {None}


def test_csv_and_jsonl_multi_label(tmp_path):
    image_folder(tmp_path / "img", per_class=2, splits=None)
    (tmp_path / "labels.csv").write_text(
        "image,labels,split\nimg/dots/dots_0.png,dots,train\nimg/dots/dots_1.png,dots;stripes,val\n"
        'img/stripes/stripes_0.png,"[""stripes""]",train\n', encoding="utf-8")
    assert sniff(tmp_path / "labels.csv").name == "classify"
    recs = read(tmp_path / "labels.csv", langs=("zh",))
    assert [r.labels["labels"] for r in recs] == [["dots"], ["dots", "stripes"], ["stripes"]]
    assert [r.meta["split"] for r in recs] == ["train", "val", "train"]
    assert recs[1].messages[1]["content"].startswith("类别：dots + stripes")
    rows = [{"image": "img/stripes/stripes_1.png", "labels": ["stripes", "dots"]}]
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert sniff(tmp_path / "l.jsonl").name == "classify"
    assert read(tmp_path / "l.jsonl")[0].labels["labels"] == ["dots", "stripes"]  # taxonomy order


def test_taxonomy_yaml_names_and_descriptions(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=1)
    recs = read(root, taxonomy=taxonomy_file(tmp_path / "tax.yaml"), langs=("zh",))
    r = next(r for r in recs if r.labels["labels"] == ["dots"])
    assert r.messages[1]["content"] == "类别：点(dots)\n随机点"


def _build(tmp_path, source, *extra):
    out = tmp_path / "out"
    rc = main(["data", "build", "--source", str(source), "--out", str(out), *extra])
    return rc, out


def test_bad_empty_class_folder(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1)
    (root / "train" / "empty").mkdir()
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{root / 'train' / 'empty'}: class folder holds no images" in err


def test_bad_unreadable_image(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1)
    bad = root / "val" / "dots" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{bad}: not a readable image" in err


def test_bad_csv_unknown_label(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "labels.csv"
    csv.write_text("image,labels\nimg/dots/dots_0.png,dots\nimg/stripes/stripes_0.png,spots\n", encoding="utf-8")
    rc, out = _build(tmp_path, csv, "--taxonomy", str(taxonomy_file(tmp_path / "tax.yaml")))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{csv}:3: field 'labels': unknown class 'spots'" in err


def test_csv_labels_as_people_type_them_with_a_taxonomy(tmp_path):
    """With a declared taxonomy, 'DOTS' and ' Stripes' name its classes (Taxonomy.resolve), as in wafer CSVs."""
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "labels.csv"
    csv.write_text("image,labels\nimg/dots/dots_0.png,DOTS\nimg/stripes/stripes_0.png, Stripes\n", encoding="utf-8")
    rc, out = _build(tmp_path, csv, "--taxonomy", str(taxonomy_file(tmp_path / "tax.yaml")))
    assert rc == 0
    recs = [json.loads(x) for f in sorted(out.glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert sorted(tuple(r["labels"]["labels"]) for r in recs) == [("dots",), ("stripes",)]


def test_bad_taxonomy_duplicate_class(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1)
    tax = taxonomy_file(tmp_path / "tax.yaml", "name: toy\nclasses: [dots, stripes, dots]\n")
    rc, out = _build(tmp_path, root, "--taxonomy", str(tax))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and f"{tax}: classes[2]: duplicate class 'dots'" in err


def test_bad_taxonomy_missing_class(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1)
    tax = taxonomy_file(tmp_path / "tax.yaml", "name: toy\nclasses: [dots]\n")
    rc, out = _build(tmp_path, root, "--taxonomy", str(tax))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{root / 'train' / 'stripes'}: field 'labels': unknown class 'stripes'" in err and str(tax) in err


def test_bad_csv_missing_column(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("image,label\n", encoding="utf-8")
    with pytest.raises(UserError, match="no rows"):
        read(csv)
    csv.write_text("image,labels\n,dots\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"l.csv:2: field 'image'"):
        read(csv)


def test_sniff_leaves_other_sources_alone(tmp_path):
    """An X-ray folder (xml reports), a folder of one class, records and report JSONL are not collections."""
    (tmp_path / "xr" / "images").mkdir(parents=True)
    image_folder(tmp_path / "xr" / "images", per_class=1, splits=None)
    (tmp_path / "xr" / "1.xml").write_text("<eCitation/>", encoding="utf-8")
    (tmp_path / "one" / "images").mkdir(parents=True)
    image_folder(tmp_path / "one", per_class=1, splits=None, classes=("images",))
    rec = tmp_path / "r.jsonl"
    rec.write_text(json.dumps({"id": "1", "images": ["a.png"], "messages": [], "image": "a.png", "labels": "x"}) + "\n")
    rep = tmp_path / "reports.jsonl"
    rep.write_text(json.dumps({"image": "images/1.png", "findings": "clear"}) + "\n")
    classify_sniff = get("classify").sniff
    for p in (tmp_path / "xr", tmp_path / "one", rec, rep):
        assert not classify_sniff(p), p
    assert sniff(tmp_path / "xr").name == "report"  # the X-ray folder is the radiology domain's


def test_a_labels_csv_of_wafer_map_files_is_the_wafer_domains(tmp_path):
    """Both domains read `image,labels` CSVs: photos go to classify, wafer-map files (FILE#K) to wafer."""
    image_folder(tmp_path / "photos", per_class=1, splits=None)
    photo = next((tmp_path / "photos").rglob("*.png"))
    (tmp_path / "p.csv").write_text(f"image,labels\n{photo},dots\n", encoding="utf-8")
    (tmp_path / "w.csv").write_text("image,labels\nlot1.stdf#0,Center\n", encoding="utf-8")
    assert sniff(tmp_path / "p.csv").name == "classify"
    assert sniff(tmp_path / "w.csv").name == "wafer"


@pytest.mark.parametrize("ref,domain", [("shot#1.png", "classify"), ("LOT#42.xml#3", "wafer"),
                                        ("LOT#42.png#3", "classify"), ("LOT#4.xml", "wafer")])
def test_labels_csv_image_ref_split_at_the_last_hash(tmp_path, ref, domain):
    """'#K' is the last '#' (the wafer side's rule): a photo named 'shot#1.png' is a photo, 'LOT#42.xml#3' a map."""
    (tmp_path / "l.csv").write_text(f"image,labels\n{ref},dots\n", encoding="utf-8")
    assert sniff(tmp_path / "l.csv").name == domain


def test_image_folder_takes_every_image_suffix_load_image_reads(tmp_path):
    """One suffix list (data/images.IMAGE_SUFFIXES) for folders everywhere: webp and gif count here too."""
    from PIL import Image

    from domainvlm.data.images import IMAGE_SUFFIXES, PIL_SUFFIXES
    from domainvlm.webui.app import example_images

    for label, ext in (("a", "webp"), ("b", "gif")):
        (tmp_path / "f" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 99, 199)).save(tmp_path / "f" / label / f"x.{ext}")
    recs = read(tmp_path / "f", langs=("en",))
    assert sorted(r.images[0].rsplit(".", 1)[1] for r in recs) == ["gif", "webp"]
    assert set(PIL_SUFFIXES) < set(IMAGE_SUFFIXES) and ".dcm" in IMAGE_SUFFIXES
    assert [p.rsplit(".", 1)[1] for p in example_images(tmp_path / "f" / "a")] == ["webp"]
