"""Classify sources as users hand them over: split folders spelled Validation/dev, nested class folders,
labels differing only in case or Unicode form, Excel CSVs (semicolons, Windows paths), repeated rows."""

import json

import pytest
from classify_helpers import image_folder

from domainvlm.cli import main
from domainvlm.domains import get
from domainvlm.errors import UserError


def read(path, **kw):
    return get("classify").read_source(path, **kw)


def _build(tmp_path, source, *extra):
    out = tmp_path / "out"
    rc = main(["data", "build", "--source", str(source), "--out", str(out), "--langs", "en", *extra])
    return rc, out


def test_split_folder_aliases_become_train_val_test(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=1, splits=("Train", "Validation", "TEST"))
    assert {r.meta["split"] for r in read(root)} == {"train", "val", "test"}
    assert len(read(root, split="val")) == 2 and len(read(root, split="valid")) == 2
    rc, out = _build(tmp_path, root)
    assert rc == 0 and sorted(p.name for p in out.glob("*.jsonl")) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    # Training/ Testing/ (Kaggle's layout) too: classify had its own table, without them, and took
    # 'Training' and 'Testing' for classes
    kaggle = image_folder(tmp_path / "kaggle", per_class=1, splits=("Training", "Testing"))
    assert {r.meta["split"] for r in read(kaggle)} == {"train", "test"}


def test_csv_split_column_aliases(tmp_path):
    image_folder(tmp_path / "img", per_class=2, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_text("image,label,split\nimg/dots/dots_0.png,dots,Train\nimg/dots/dots_1.png,dots, dev \n"
                   "img/stripes/stripes_0.png,stripes,train\nimg/stripes/stripes_1.png,stripes,valid\n")
    assert [r.meta["split"] for r in read(csv)] == ["train", "val", "train", "val"]


def test_nested_class_folders_links_and_hidden_files(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=1, splits=None)
    sub = root / "dots" / "lot 7" / "cam2"
    sub.mkdir(parents=True)
    (root / "dots" / "dots_0.png").rename(sub / "deep.png")
    (root / "dots" / "loop").symlink_to(root / "dots")  # a link back up the tree is walked once
    (root / "dots" / ".thumbs").mkdir()
    (root / "dots" / ".thumbs" / "x.png").write_bytes(b"not an image")
    (tmp_path / "elsewhere").mkdir()
    (root / "stripes" / "stripes_0.png").rename(tmp_path / "elsewhere" / "s.png")
    (root / "stripes" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for junk in (".DS_Store", "Thumbs.db", "._a.png", "desktop.ini"):
        (root / "stripes" / junk).write_bytes(b"\0\0junk")
    recs = read(root)
    assert sorted((r.images[0].rsplit("/", 1)[1], r.labels["labels"][0]) for r in recs) == \
        [("deep.png", "dots"), ("s.png", "stripes")]


def test_excel_csv_semicolons_bom_quoted_header_any_column_order(tmp_path):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_bytes('\ufeff"Split";"Label";"File"\r\ntrain;dots;img/dots/dots_0.png\r\n'
                    'val;"[""dots"", ""stripes""]";img/stripes/stripes_0.png\r\n'.encode())
    rc, out = _build(tmp_path, csv)
    assert rc == 0
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [r["labels"]["labels"] for r in val] == [["dots", "stripes"]]
    assert json.loads((out / "taxonomy.json").read_text())["multi_label"] is True


def test_csv_windows_paths(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_text("file,label\nimg\\dots\\dots_0.png,dots\nimg\\stripes\\stripes_0.png,stripes\n")
    assert [r.images[0] for r in read(csv)] == [str(tmp_path / "img/dots/dots_0.png"),
                                                str(tmp_path / "img/stripes/stripes_0.png")]
    csv.write_text("file,label\nimg\\dots\\dots_0.png,dots\nD:\\scans\\stripes_0.png,stripes\n")
    rc, out = _build(tmp_path, csv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{csv}:3: field 'file': 'D:\\\\scans\\\\stripes_0.png' is a Windows drive or network path" in err


def test_an_image_listed_twice_is_refused(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_text("image,label,split\nimg/dots/dots_0.png,dots,train\nimg/stripes/stripes_0.png,stripes,val\n"
                   "./img/dots/dots_0.png,stripes,val\n")
    rc, out = _build(tmp_path, csv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{tmp_path / 'img/dots/dots_0.png'}: listed twice ({csv}:2 and {csv}:4)" in err
    root = image_folder(tmp_path / "toy", per_class=1)  # a link in another class folder is the same image
    (root / "val" / "stripes" / "x.png").symlink_to(root / "val" / "dots" / "dots_0.png")
    rc, out = _build(tmp_path, root)
    assert rc == 2 and "listed twice" in capsys.readouterr().err and not out.exists()


def test_split_folders_mixed_with_class_folders_or_loose_images(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1)
    image_folder(root, per_class=1, splits=None, classes=("extra",))
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert "split folders (train, val) beside class folder 'extra'" in err
    root = image_folder(tmp_path / "toy2", per_class=2)
    (root / "val" / "dots" / "dots_0.png").rename(root / "val" / "stray.png")
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and f"{root / 'val' / 'stray.png'}: image directly in split folder" in err
    flat = image_folder(tmp_path / "flat", per_class=1, splits=None)
    (flat / "dots" / "dots_0.png").rename(flat / "top.png")
    rc, out = _build(tmp_path, flat)
    assert rc == 2 and f"{flat / 'top.png'}: image directly in the top folder" in capsys.readouterr().err


def test_csv_row_without_split_among_split_rows(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_text("image,label,split\nimg/dots/dots_0.png,dots,train\nimg/stripes/stripes_0.png,stripes,\n")
    rc, out = _build(tmp_path, csv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and err.endswith(f"{csv}:3: field 'split': empty while other rows name a split")


def test_labels_in_decomposed_unicode_are_one_class(tmp_path):
    import unicodedata

    nfc, nfd = "Kratzer-ä", unicodedata.normalize("NFD", "Kratzer-ä")
    root = image_folder(tmp_path / "toy", per_class=1, splits=None, classes=(nfd, "rolled in scale"))
    csv = tmp_path / "l.csv"
    csv.write_text(f"image,label\ntoy/{nfd}/{nfd}_0.png,{nfc}\ntoy/rolled in scale/rolled in scale_0.png,"
                   f"rolled in scale\n", encoding="utf-8")
    assert [r.labels["labels"] for r in read(root)] == [[nfc], ["rolled in scale"]]
    assert [r.labels["labels"] for r in read(csv)] == [[nfc], ["rolled in scale"]]


def test_labels_differing_only_in_case_are_refused(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1, splits=("train",), classes=("Crazing", "dots"))
    image_folder(root, per_class=1, splits=("val",), classes=("crazing", "dots"))
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"labels 'Crazing' ({root / 'train' / 'Crazing'}) and 'crazing' ({root / 'val' / 'crazing'}) differ " \
           "only in case" in err


def test_eval_reads_data_in_the_models_taxonomy(tmp_path, capsys):
    from domainvlm.taxonomy import Taxonomy, TaxonomyClass

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"domainvlm": {"answer_head": "classify"}}))
    Taxonomy("steel", [TaxonomyClass(n) for n in ("dots", "patches", "stripes")]).save(model)
    root = image_folder(tmp_path / "toy", per_class=1, splits=None)
    recs = read(root, model_dir=str(model))
    assert {r.labels["taxonomy"] for r in recs} == {"steel"}
    m = get("classify").score(recs, ["Class: patches", "Class: stripes"])  # a class of the model, not the data
    assert m["unparsed"] == 0 and m["exact_match"] == 0.5 and m["confusion"]["rows"] == ["dots", "patches", "stripes"]
    (tmp_path / "toy" / "Dots").mkdir()  # the model's 'dots' spelt otherwise: the same class (Taxonomy.resolve)
    (tmp_path / "toy" / "dots" / "dots_0.png").rename(tmp_path / "toy" / "Dots" / "d.png")
    (tmp_path / "toy" / "dots").rmdir()
    assert sorted(r.labels["labels"][0] for r in read(root, model_dir=str(model))) == ["dots", "stripes"]
    (tmp_path / "toy" / "Dots").rename(tmp_path / "toy" / "Spots")  # a label the model lacks: its folder named
    rc = main(["eval", "--model", str(model), "--data", str(root), "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{root / 'Spots'}: field 'labels': unknown class 'Spots'" in err
    assert not (tmp_path / "m.json").exists()
    (model / "config.json").write_text(json.dumps({"domainvlm": {"answer_head": "wafer"}}))  # not a classify model
    assert {r.labels["taxonomy"] for r in read(root, model_dir=str(model))} == {"toy"}


def test_calibrate_refuses_a_label_the_model_lacks(tmp_path, capsys):
    from classify_helpers import tiny_head_model
    from test_classify_head import TAX  # the head module's taxonomy, on a tiny compact model

    model = tiny_head_model(tmp_path / "model", TAX)
    bad = TAX.names[0] + "-x"  # not a class of the model in any spelling
    root = image_folder(tmp_path / "toy", per_class=1, splits=None, classes=(TAX.names[1], bad))
    rc = main(["calibrate", "--model", str(model), "--data", str(root), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{root / bad}: field 'labels': unknown class {bad!r}" in err  # was: silently dropped
    assert not (model / "calibration.json").exists()


def test_copies_across_splits_or_classes_are_warned(tmp_path, capsys):
    import shutil

    root = image_folder(tmp_path / "toy", per_class=2)
    shutil.copy(root / "train" / "dots" / "dots_0.png", root / "val" / "dots" / "copy.png")
    shutil.copy(root / "val" / "dots" / "dots_1.png", root / "val" / "stripes" / "copy2.png")
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err
    assert rc == 0 and (out / "val.jsonl").is_file()
    assert f"1 image(s) are byte-identical copies of an image in another split (e.g. {root}/val/dots/copy.png " \
           f"(val) = {root}/train/dots/dots_0.png (train))" in err
    assert f"1 image(s) are byte-identical copies with other labels (e.g. {root}/val/stripes/copy2.png " \
           f"(stripes) = {root}/val/dots/dots_1.png (dots))" in err


def test_a_split_is_read_without_checking_the_others(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"domainvlm": {"answer_head": "classify"}}))
    from domainvlm.taxonomy import Taxonomy, TaxonomyClass

    Taxonomy("steel", [TaxonomyClass("dots"), TaxonomyClass("stripes")]).save(model)
    root = image_folder(tmp_path / "toy", per_class=1)
    image_folder(root, per_class=1, splits=("train",), classes=("extra",))  # a class the model lacks
    (root / "train" / "dots" / "dots_0.png").write_bytes(b"broken")
    recs = read(root, split="val", model_dir=str(model))
    assert [r.labels["labels"] for r in recs] == [["dots"], ["stripes"]]
    with pytest.raises(UserError, match=r"toy: no images in split 'test' \(present: train, val\)"):
        read(root, split="test")


@pytest.mark.parametrize("body, msg", [
    (b"image,label\nimg/dots/dots_0.png,dots,stripes\n", ":2: 3 fields, the header has 2 (several labels: separate"),
    (b"image,label,image\nimg/dots/dots_0.png,dots,x\n", ":1: column 'image' appears twice"),
    (b"image,label\nimg/dots/dots_0.png,dots\nimg/stripes/stripes_0.png,stri\xffpes\n",
     ":3: not UTF-8 text (byte 0xff at column 31)"),
])
def test_bad_csv_rows_name_the_line(tmp_path, capsys, body, msg):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_bytes(body)
    rc, out = _build(tmp_path, csv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1 and f"{csv}{msg}" in err


@pytest.mark.parametrize("row, label", [("img/dots/dots_0.png,dots+stripes", "'dots+stripes'"),
                                        ('img/dots/dots_0.png,"dots', "'dots\\nimg/stripes/")])
def test_a_label_that_cannot_be_a_class_names_its_row(tmp_path, capsys, row, label):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_text(f"image,label\n{row}\nimg/stripes/stripes_0.png,stripes\n")
    rc, out = _build(tmp_path, csv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and f"{csv}:2: field 'labels': {label}" in err


def test_broken_link_and_folder_names_with_spaces(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1, splits=("train",))
    image_folder(root, per_class=1, splits=("val",), classes=("dots ", "stripes"))  # 'dots ' as typed in Explorer
    assert {r.labels["labels"][0] for r in read(root)} == {"dots", "stripes"}
    link = root / "val" / "stripes" / "gone.png"
    link.symlink_to(tmp_path / "moved-away.png")
    rc, out = _build(tmp_path, root)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and f"{link}: broken link" in err


def test_folders_that_zip_tools_add_are_skipped(tmp_path):
    root = image_folder(tmp_path / "toy", per_class=1)
    for junk in (root / "__MACOSX" / "train" / "dots", root / "train" / "dots" / "@eaDir"):
        junk.mkdir(parents=True)
        (junk / "._dots_0.png").write_bytes(b"\0\5\26\7 AppleDouble")
    assert sorted(r.meta["split"] for r in read(root)) == ["train", "train", "val", "val"]


def test_split_folders_given_as_separate_sources(tmp_path):
    root = image_folder(tmp_path / "photos", per_class=1, splits=("train",), classes=("dots", "stripes", "zigzag"))
    image_folder(root, per_class=1, splits=("Validation",))  # no zigzag in val
    rc, out = _build(tmp_path, root / "train", "--source", str(root / "Validation"))
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == ["taxonomy.json", "train.jsonl", "val.jsonl"]
    tax = json.loads((out / "taxonomy.json").read_text())
    assert tax["name"] == "photos" and [c["name"] for c in tax["classes"]] == ["dots", "stripes", "zigzag"]
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert {r["labels"]["taxonomy"] for r in val} == {"photos"} and len(val) == 2


def test_sources_with_separately_derived_classes_are_refused(tmp_path, capsys):
    root = image_folder(tmp_path / "toy", per_class=1, splits=None)
    csv = tmp_path / "more.csv"
    csv.write_text("image,label,split\ntoy/dots/dots_0.png,dots,val\n")
    rc, out = _build(tmp_path, root, "--source", str(csv))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and err.endswith("the records name 2 taxonomies ('more', 'toy'): sources "
                                                         "read separately derive their own classes; give "
                                                         "--taxonomy FILE listing them all")
