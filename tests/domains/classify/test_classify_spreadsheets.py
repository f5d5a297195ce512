"""Labels CSVs as spreadsheets export them: header aliases in any case (Filename/File/Image/Path, Class/Label/
Category, Set/Split), the separator sniffed (`,` `;` tab), and blank rows (empty lines, `,,`) skipped."""

import json

import pytest
from classify_helpers import image_folder

from domainvlm.cli import main
from domainvlm.domains import get, sniff


def read(path, **kw):
    return get("classify").read_source(path, langs=("en",), **kw)


@pytest.mark.parametrize("header, sep", [
    ("Filename,Class,Set", ","),
    ("File;Category;Split", ";"),       # European Excel
    ("Image Path\tLabel\tSET", "\t"),
    ('"IMAGE";"CLASS";"Subset"', ";"),
    ("path,category,split", ","),
    ("File Name,Class Name,set", ","),
])
def test_header_aliases_in_any_case_and_separator(tmp_path, header, sep):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{header}\n" + f"img/dots/dots_0.png{sep}dots{sep}Train\n"
                   f"img/stripes/stripes_0.png{sep}stripes{sep}Validation\n", encoding="utf-8")
    assert sniff(csv).name == "classify"
    recs = read(csv)
    assert [(r.labels["labels"], r.meta["split"]) for r in recs] == [(["dots"], "train"), (["stripes"], "val")]
    assert recs[0].images[0] == str(tmp_path / "img/dots/dots_0.png")


def test_header_aliases_in_jsonl(tmp_path):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    rows = [{"Filename": "img/dots/dots_0.png", "Class": "dots", "Set": "train"},
            {"Filename": "img/stripes/stripes_0.png", "Class": "stripes", "Set": "val"}]
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert sniff(tmp_path / "l.jsonl").name == "classify"
    assert [(r.labels["labels"], r.meta["split"]) for r in read(tmp_path / "l.jsonl")] == \
        [(["dots"], "train"), (["stripes"], "val")]


def test_the_preferred_column_wins_and_a_repeated_alias_is_refused(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=1, splits=None)
    csv = tmp_path / "l.csv"  # 'image' is preferred over 'path'; 'label' over 'category'
    csv.write_text("path,category,image,label\nnowhere.png,x,img/dots/dots_0.png,dots\n", encoding="utf-8")
    assert [r.labels["labels"] for r in read(csv)] == [["dots"]]
    csv.write_text("Image,Label,IMAGE\nimg/dots/dots_0.png,dots,x\n", encoding="utf-8")
    rc = main(["data", "build", "--source", str(csv), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith(f"{csv}:1: column 'Image' appears twice") and not (tmp_path / "out").exists()


def test_blank_rows_are_skipped(tmp_path, capsys):
    image_folder(tmp_path / "img", per_class=2, splits=None)
    csv = tmp_path / "l.csv"
    csv.write_bytes(b"Filename;Class;Set\r\n;;\r\n\r\nimg/dots/dots_0.png;dots;train\r\n  ; ;\r\n"
                    b"img/stripes/stripes_0.png;stripes;val\r\n;;\r\n\r\n")  # a blank first row: still sniffed
    assert sniff(csv).name == "classify"
    assert [r.labels["labels"] for r in read(csv)] == [["dots"], ["stripes"]]
    csv.write_text("image,label\n,,\nimg/dots/dots_1.png,dots\n\n,\nimg/stripes/stripes_1.png,spots\n,,\n")
    rc = main(["data", "build", "--source", str(csv), "--taxonomy", str(_tax(tmp_path)), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()  # line numbers are still the file's
    assert rc == 2 and f"{csv}:6: field 'labels': unknown class 'spots'" in err and len(err.splitlines()) == 1
    csv.write_text("image,label\n,,\n\n")
    rc = main(["data", "build", "--source", str(csv), "--out", str(tmp_path / "o")])
    assert rc == 2 and f"{csv}: no rows" in capsys.readouterr().err


def _tax(tmp_path):
    p = tmp_path / "tax.yaml"
    p.write_text("name: toy\nclasses: [dots, stripes]\n", encoding="utf-8")
    return p
