"""sharegpt / LLaVA import and export (data/formats.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainvlm.data.formats import (check_images, detect_json_format, read_llava, read_sharegpt,
                                    resolve_image_ref, write_llava, write_sharegpt)
from domainvlm.data.record import Record
from domainvlm.errors import UserError


def _dump(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_real_llamafactory_excerpt(shared_data, tmp_path):
    src = shared_data / "iu-xray-samples/llamafactory_sharegpt_excerpt.json"
    assert detect_json_format(src) == "sharegpt"
    recs = read_sharegpt(src)
    assert len(recs) == 10
    images_dir = (shared_data / "iu-xray-samples/images").resolve()
    for r in recs:
        assert [m["role"] for m in r.messages] == ["user", "assistant"]
        assert r.messages[0]["content"].startswith("<image>")
        assert len(r.images) == 1 and Path(r.images[0]).parent == images_dir  # "images/x.png" vs the JSON's folder
    check_images(recs, src)
    # images stored flat in another folder are still found by basename
    assert read_sharegpt(src, image_root=images_dir)[0].images == recs[0].images
    # round trip through both formats keeps images and conversation
    for write, read, name in ((write_sharegpt, read_sharegpt, "sg.json"), (write_llava, read_llava, "ll.json")):
        out = tmp_path / name
        write(recs, out, image_root=images_dir)
        back = read(out, image_root=images_dir)
        assert [(b.images, b.messages) for b in back] == [(r.images, r.messages) for r in recs]


def _records(root: Path) -> list[Record]:
    (root / "img").mkdir()
    for n in ("a.png", "b.png"):
        (root / "img" / n).write_bytes(b"x")
    a, b = str(root / "img/a.png"), str(root / "img/b.png")
    return [
        Record("r1", [a], [{"role": "user", "content": "<image>\nWhat is shown?"},
                           {"role": "assistant", "content": "A chest X-ray."}], {"task": "report"}, {"lang": "en"}),
        Record("r2", [a, b], [{"role": "system", "content": "You are a radiologist."},
                              {"role": "user", "content": "<image><image>Compare."},
                              {"role": "assistant", "content": "Same."},
                              {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes."}]),
        Record("r3", [], [{"role": "user", "content": "Text only"}, {"role": "assistant", "content": "ok"}]),
    ]


@pytest.mark.parametrize("style", ["conversations", "messages"])
def test_sharegpt_round_trip(tmp_path, style):
    recs = _records(tmp_path)
    out = tmp_path / "data.json"
    write_sharegpt(recs, out, style=style, keep_extra=True)
    raw = json.loads(out.read_text())
    assert raw[0]["images"] == ["img/a.png"]  # relative to the JSON's folder, as LLaMA-Factory expects
    if style == "conversations":
        assert raw[1]["conversations"][0] == {"from": "system", "value": "You are a radiologist."}
    back = read_sharegpt(out)
    assert [b.to_dict() for b in back] == [r.to_dict() for r in recs]
    # role/content rows with id/labels/meta are exactly domainvlm records
    assert detect_json_format(out) == ("sharegpt" if style == "conversations" else "records")


def test_llava_round_trip(tmp_path):
    all_recs = _records(tmp_path)
    recs = [r for r in all_recs if r.id != "r2"]
    out = tmp_path / "llava.json"
    write_llava(recs, out)
    raw = json.loads(out.read_text())
    assert raw[0]["image"] == "img/a.png" and "image" not in raw[1]
    assert detect_json_format(out) == "llava"
    back = read_llava(out)
    assert [(b.id, b.images, b.messages) for b in back] == [(r.id, r.images, r.messages) for r in recs]
    with pytest.raises(UserError, match="system"):
        write_llava(all_recs, tmp_path / "n.json")
    assert not (tmp_path / "n.json").exists()


def test_llava_multi_image_and_image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"x")
    src = _dump(tmp_path / "l.json", [{"id": 5, "image": ["x.png", "x.png"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nDescribe."}, {"from": "gpt", "value": "Two views."}]}])
    rec = read_llava(src, image_root=folder)[0]
    assert rec.id == "5" and rec.images == [str((folder / "x.png").resolve())] * 2


def test_sharegpt_top_level_system_and_jsonl(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"system": "Be brief.", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) + "\n" +
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]},
                                 {"role": "assistant", "content": "y"}], "images": ["/abs/missing.png"]}) + "\n")
    recs = read_sharegpt(src)
    assert recs[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert recs[1].messages[0]["content"] == "<image>x" and recs[1].images == ["/abs/missing.png"]
    with pytest.raises(UserError, match="1 image file"):
        check_images(recs, src)


def test_llamafactory_messages_jsonl_through_load_any(tmp_path):
    """LLaMA-Factory's messages/images variant as JSONL is sharegpt, not a domainvlm record file (which
    asked for an 'id' on line 1); a record line that lacks its id still says so."""
    from domainvlm.data.sources import load_any

    src = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "Ok."}],
            "images": ["a.png"]}
    src.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    recs = load_any(src)
    assert [r.id for r in recs] == ["train-0", "train-1"] and recs[0].images == [str(tmp_path / "a.png")]
    bad = tmp_path / "records.jsonl"
    bad.write_text(json.dumps({**line, "labels": {}, "meta": {}}) + "\n")
    with pytest.raises(UserError, match="records.jsonl:1: field 'id': missing"):
        load_any(bad)


def test_llamafactory_alpaca_through_load_any(tmp_path):
    """LLaMA-Factory's alpaca rows (instruction / input / output / system / history / images) were 'not a
    recognised data source'."""
    from domainvlm.data.sources import load_any

    src = tmp_path / "alpaca.json"
    rows = [{"instruction": "<image>What defect is this?", "input": "", "output": "Crazing.", "images": ["a.png"]},
            {"instruction": "<image>Describe the image.", "input": "In one word.", "output": "Lines.",
             "system": "You inspect steel.", "history": [["Hello", "Hi."]], "images": ["b.png"]}]
    src.write_text(json.dumps(rows))
    a, b = load_any(src)
    assert detect_json_format(src) == "alpaca" and a.images == [str(tmp_path / "a.png")]
    assert a.messages == [{"role": "user", "content": "<image>What defect is this?"},
                          {"role": "assistant", "content": "Crazing."}]
    assert [m["role"] for m in b.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert b.messages[3]["content"] == "<image>Describe the image.\nIn one word." and b.messages[1]["content"] == "Hello"
    src.write_text(json.dumps([{**rows[0], "output": ""}]))
    with pytest.raises(UserError, match="record 0: field 'output': must be a non-empty string"):
        load_any(src)
    src.write_text(json.dumps([{**rows[0], "history": [["only a question"]]}]))
    with pytest.raises(UserError, match="record 0: field 'history': must be a list of"):
        load_any(src)


@pytest.mark.parametrize("item, msg", [
    ({"images": []}, "record 0: field 'conversations': missing"),
    ({"conversations": [{"from": "human", "value": "<image>x"}, {"from": "gpt", "value": "y"}]},
     "record 0: field 'images': 0 image(s) but 1 '<image>'"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "record 0: field 'conversations[0].from': unsupported"),
    ({"conversations": [{"from": "human"}]}, "record 0: field 'conversations[0]': needs"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "last turn must be the assistant"),
    ({"conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "y"}], "images": [3]},
     "record 0: field 'images': must be"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": 1}]},
     "field 'conversations[1].value': must be a string"),
])
def test_sharegpt_errors_name_file_record_field(tmp_path, item, msg):
    src = _dump(tmp_path / "bad.json", [item])
    with pytest.raises(UserError) as e:
        read_sharegpt(src)
    assert str(src) in str(e.value) and msg in str(e.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_sharegpt(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(UserError, match="malformed JSON"):
        read_llava(bad)
    _dump(bad, "a string")
    with pytest.raises(UserError, match="expected a JSON array"):
        read_sharegpt(bad)
    _dump(bad, [{"x": 1}])
    assert detect_json_format(bad) == "unknown"


def test_write_is_atomic(tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("old")

    class Boom(Record):
        @property
        def messages(self):
            raise RuntimeError("boom")

        @messages.setter
        def messages(self, v):
            pass

    with pytest.raises(RuntimeError):
        write_sharegpt([Boom("x", [], [])], out)
    assert out.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_resolve_image_ref(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat/x.png").write_bytes(b"x")
    assert resolve_image_ref("deep/dir/x.png", tmp_path, tmp_path / "flat") == str((tmp_path / "flat/x.png").resolve())
    assert resolve_image_ref("maps.npz#3", tmp_path) == str(tmp_path / "maps.npz") + "#3"
    assert resolve_image_ref("http://h/x.png", tmp_path) == "http://h/x.png"
    assert resolve_image_ref("missing.png", tmp_path) == str(tmp_path / "missing.png")


def test_resolve_image_ref_index_after_the_last_hash(tmp_path):
    """'#K' is the last '#' for every file kind (fab map files too), so the file is found beside the records
    even when an image root is given."""
    (tmp_path / "LOT#42.xml").write_text("<Maps/>")
    (tmp_path / "lot.stdf").write_bytes(b"x")
    root = tmp_path / "flat"
    for ref in ("LOT#42.xml#3", "lot.stdf#0"):
        want = str((tmp_path / ref.rsplit("#", 1)[0]).resolve()) + "#" + ref.rsplit("#", 1)[1]
        assert resolve_image_ref(ref, tmp_path, root) == want
    assert resolve_image_ref("shot#a.png", tmp_path) == str(tmp_path / "shot#a.png")
