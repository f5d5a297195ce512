"""Report recipe: instruction builder (domains/radiology/instruct.py) and report scores (domains/radiology/report_eval.py)."""

from __future__ import annotations

import json
import re

import pytest

from domainvlm.cli import main
from domainvlm.data.record import IMAGE_TOKEN, Record, read_jsonl
from domainvlm.domains.radiology.instruct import build_report_records
from domainvlm.data.sources import load_any
from domainvlm.domains.radiology.sources import make_report_record
from domainvlm.domains.radiology import prompts as rp
from domainvlm.errors import UserError
from domainvlm.domains.radiology.report_eval import report_scores

CJK = re.compile(r"[\u4e00-\u9fff]")
EN_FINDINGS = "Mild cardiomegaly. No pleural effusion. Possible left basilar atelectasis. Sternotomy wires are intact."
EN_IMPRESSION = "Mild cardiomegaly without acute disease."
ZH_REPORT = "心脏增大。未见胸腔积液。左下肺可能有肺不张。"
# hand labels of the texts above (what a reader says), not the labeler's output
EN_HAND = {"Cardiomegaly": 1, "Pleural Effusion": 0, "Atelectasis": -1, "Support Devices": 1}
ZH_HAND = {"Cardiomegaly": 1, "Pleural Effusion": 0, "Atelectasis": -1}
EN_KIND = {1: "Yes.", 0: "No.", -1: "Possibly, but it is not certain.", None: "The report does not mention"}
ZH_KIND = {1: "是的", 0: "没有。", -1: "可能有", None: "报告中没有提到"}


def _en(rid="cxr1", images=("/x/a.png",), split="train"):
    return make_report_record(rid, list(images), EN_FINDINGS, EN_IMPRESSION, source="t", split=split, lang="en")


def _zh(rid="cxr2", images=("/x/b.png",), split="train"):
    return make_report_record(rid, list(images), None, None, report=ZH_REPORT, source="t", split=split, lang="zh")


def _pairs(msgs):
    return [(msgs[i]["content"], msgs[i + 1]["content"]) for i in range(0, len(msgs), 2)]


def test_turn_structure_images_and_labels():
    src = _en(images=("/x/pa.png", "/x/lat.png"))
    (r,) = build_report_records([src], qa_per_report=2, seed=3)
    r.check()
    assert [m["role"] for m in r.messages] == ["user", "assistant"] * 4  # report, 2 questions, impression
    first_q = r.messages[0]["content"]
    assert first_q.startswith(f"{IMAGE_TOKEN}\n{IMAGE_TOKEN}\n") and first_q.count(IMAGE_TOKEN) == 2
    assert first_q.split("\n")[-1] in rp.REPORT_PROMPTS["en"]
    assert all(IMAGE_TOKEN not in m["content"] for m in r.messages[1:])  # images only in the first turn
    ref = f"{EN_FINDINGS} {EN_IMPRESSION}"
    assert r.messages[1]["content"] == ref == r.labels["report"]
    assert r.labels["task"] == "report" and r.labels["lang"] == "en" and r.meta["split"] == "train"
    assert r.messages[-2]["content"] in rp.IMPRESSION_PROMPTS["en"] and r.messages[-1]["content"] == EN_IMPRESSION
    assert len(r.labels["qa"]) == 2 and r.images == src.images
    assert Record.from_dict(json.loads(json.dumps(r.to_dict()))).messages == r.messages  # JSONL round trip


def test_answers_follow_the_labeler_en():
    (r,) = build_report_records([_en()], qa_per_report=len(rp.ASKABLE), seed=0)
    qa = _pairs(r.messages[2:-2])  # all 13 askable observations, then the impression turn
    assert len(qa) == len(rp.ASKABLE) == len(r.labels["qa"])
    asked = set()
    for (q, a), item in zip(qa, r.labels["qa"]):
        obs = item["observation"]
        asked.add(obs)
        assert q in rp.questions(obs, "en")
        assert item["value"] == EN_HAND.get(obs), obs
        assert a.startswith(EN_KIND[EN_HAND.get(obs)]), (obs, a)
    assert asked == set(rp.ASKABLE)
    by_obs = dict(zip((i["observation"] for i in r.labels["qa"]), (a for _, a in qa)))
    assert by_obs["Cardiomegaly"] == "Yes. Mild cardiomegaly."  # quotes the deciding clause
    assert by_obs["Pleural Effusion"] == "No. No pleural effusion."


def test_zh_text_gets_zh_prompts_and_answers():
    (r,) = build_report_records([_zh()], qa_per_report=len(rp.ASKABLE), seed=1)
    assert r.labels["lang"] == "zh" and r.meta["lang"] == "zh"
    assert r.messages[0]["content"].split("\n", 1)[1] in rp.REPORT_PROMPTS["zh"]
    for (q, a), item in zip(_pairs(r.messages[2:]), r.labels["qa"]):
        assert CJK.search(q) and CJK.search(a)
        assert a.startswith(ZH_KIND[ZH_HAND.get(item["observation"])]), (item, a)
    assert len(r.messages) == 2 + 2 * len(rp.ASKABLE)  # no impression section in this source: no such turn


def test_qa_zero_pass_through_lang_filter_and_errors():
    turns = [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a"}]
    other = Record("w", ["/m.npz#0"], turns, labels={"task": "wafer", "defects": []})
    out = build_report_records([_en(), _zh(), other], qa_per_report=0)
    assert [len(r.messages) for r in out] == [2, 2, 2] and out[2] is other
    assert [r.id for r in build_report_records([_en(), _zh()], langs=("zh",))] == ["cxr2"]
    with pytest.raises(UserError, match="none of the 1 report"):
        build_report_records([_en()], langs=("zh",))
    with pytest.raises(UserError, match="--qa-per-report"):
        build_report_records([_en()], qa_per_report=-1)
    a = build_report_records([_en(), _zh()], seed=5)
    assert [x.messages for x in a] == [x.messages for x in build_report_records([_en(), _zh()], seed=5)]


def test_data_build_hook(tmp_path):
    src = tmp_path / "xrayglm.json"  # XrayGLM layout; images need not exist to build
    src.write_text(json.dumps({"annotations": [{"image_id": "1_1", "caption": EN_FINDINGS},
                                               {"image_id": "2_1", "caption": ZH_REPORT}]}), encoding="utf-8")
    assert [len(r.messages) for r in load_any(src)] == [2, 2]  # default: records as the source has them
    assert [len(r.messages) for r in load_any(src, qa_per_report=1)] == [4, 4]
    assert main(["data", "build", "--source", str(src), "--out", str(tmp_path / "d"), "--qa-per-report", "2"]) == 0
    recs = list(read_jsonl(tmp_path / "d" / "all.jsonl"))
    assert [r.labels["lang"] for r in recs] == ["en", "zh"] and all(len(r.messages) == 6 for r in recs)


def test_data_build_langs_without_qa(tmp_path, capsys):
    """--langs keeps only reports in those languages also when the records stay as the source has them."""
    src = tmp_path / "xrayglm.json"
    src.write_text(json.dumps({"annotations": [{"image_id": "1_1", "caption": EN_FINDINGS},
                                               {"image_id": "2_1", "caption": ZH_REPORT}]}), encoding="utf-8")
    assert main(["data", "build", "--source", str(src), "--out", str(tmp_path / "d"), "--langs", "zh"]) == 0
    assert [r.id for r in read_jsonl(tmp_path / "d" / "all.jsonl")] == ["2_1"]
    assert "dropped 1 of 2 record(s) not in --langs zh" in capsys.readouterr().err
    zh = tmp_path / "zh.json"
    zh.write_text(json.dumps({"annotations": [{"image_id": "2_1", "caption": ZH_REPORT}]}), encoding="utf-8")
    assert main(["data", "build", "--source", str(zh), "--out", str(tmp_path / "e"), "--langs", "en"]) == 2
    assert "no record of the sources is in these languages" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_data_build_warns_of_images_in_two_splits(shared_data, tmp_path, capsys):
    """XrayGLM's unsplit captions next to the pairs file's R2Gen splits: the same radiographs in all.jsonl
    and test.jsonl; said on stderr (the build still succeeds), and not for the pairs file alone."""
    iu = shared_data / "iu-xray-samples"
    assert main(["data", "build", "--source", str(iu / "pairs_with_original_reports.jsonl"),
                 "--out", str(tmp_path / "a")]) == 0
    assert "more than one split" not in capsys.readouterr().err
    assert main(["data", "build", "--source", str(iu / "pairs_with_original_reports.jsonl"), "--source",
                 str(iu / "xrayglm_openi_en_excerpt.json"), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "warning: 10 image reference(s) are in more than one split file" in err and " in all and " in err


def test_r2gen_blank_test_key_split_via_load_any(shared_data):
    recs = load_any(shared_data / "iu-xray-samples" / "r2gen_annotation.json", split="test")
    assert len(recs) == 590 and all(r.labels["task"] == "report" for r in recs)


REQUIRED = ("task", "n", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision_micro",
            "ce_recall_micro", "ce_f1_micro", "ce_precision_macro", "ce_recall_macro", "ce_f1_macro", "ce_table",
            "collapse_rate", "distinct_answers", "most_common_answers")


def _eval_set():
    reps = [EN_FINDINGS, "Heart size is normal. The lungs are clear. No pneumothorax.",
            "Small right pleural effusion. No pneumothorax. Heart size normal.",
            "Right upper lobe consolidation consistent with pneumonia. Normal heart size."]
    return [make_report_record(f"r{i}", [f"/x/{i}.png"], None, None, report=t, source="t", split="test", lang="en")
            for i, t in enumerate(reps)]


def test_perfect_answers_score_one():
    recs = _eval_set()
    m = report_scores(recs, [r.labels["report"] for r in recs], meteor=False)
    assert set(REQUIRED) <= set(m) and "unparsed" not in m
    assert m["task"] == "report" and m["n"] == 4 and m["meteor"] is None
    assert m["bleu_4"] == pytest.approx(1.0) and m["rouge_l"] == pytest.approx(1.0)
    assert m["ce_f1_micro"] == 1.0 and m["collapse_rate"] == 0.0 and m["distinct_answers"] == 4
    positives = {o: v for o, v in m["ce_table"].items() if v["support"]}
    assert {"Cardiomegaly", "Pleural Effusion", "Consolidation", "Pneumonia"} <= set(positives)
    assert all(v["f1"] == 1.0 for v in positives.values())
    assert len(m["ce_table"]) == 14 and 0 < m["ce_f1_macro"] < 1  # observations absent from both sides count 0
    json.dumps(m)  # metrics.json must be able to hold it


def test_identical_answers_for_different_images_is_collapse():
    recs = _eval_set()
    same = "The lungs are clear. No acute disease."
    m = report_scores(recs, [same] * 4, meteor=False)
    assert m["collapse_rate"] == 1.0 and m["distinct_answers"] == 1
    assert m["most_common_answers"] == [{"answer": same, "count": 4}]
    assert m["bleu_4"] < 0.5 and m["ce_recall_micro"] < 1
    # the same answer for the same image twice is not collapse; one other image repeating it is
    twin = [recs[0], make_report_record("r0b", recs[0].images, None, None, report=EN_FINDINGS, source="t",
                                        split="test", lang="en"), recs[1]]
    assert report_scores(twin, ["a b c d", "a b c d", "e f g h"], meteor=False)["collapse_rate"] == 0.0
    assert report_scores(twin, ["a b c d", "a b c d", "A B C D "], meteor=False)["collapse_rate"] == 1.0


def test_right_report_for_studies_with_equal_references_is_not_collapse(shared_data):
    """IU-Xray references repeat (41% of the R2Gen test studies share their text with another study):
    answering each with its reference is perfect, not collapse (it scored 0.415)."""
    recs = load_any(shared_data / "iu-xray-samples" / "r2gen_annotation.json", split="test")
    refs = [r.labels["report"] for r in recs]
    m = report_scores(recs, refs, meteor=False)
    assert m["collapse_rate"] == 0.0 and m["bleu_4"] == pytest.approx(1.0)
    assert report_scores(recs, ["No acute cardiopulmonary abnormality."] * len(recs), meteor=False)[
        "collapse_rate"] == 1.0


def test_mixed_languages_scored_per_group():
    recs = _eval_set()[:2] + [_zh("z1", ("/x/z1.png",)), _zh("z2", ("/x/z2.png",))]
    answers = [recs[0].labels["report"], "Heart size is normal.", ZH_REPORT, "心脏增大。"]
    m = report_scores(recs, answers, meteor=False)
    assert m["langs"] == {"en": 2, "zh": 2} and set(m["by_lang"]) == {"en", "zh"}
    for k in ("bleu_1", "rouge_l", "cider"):
        assert m[k] == pytest.approx((m["by_lang"]["en"][k] * 2 + m["by_lang"]["zh"][k] * 2) / 4)
    assert m["meteor"] is None
    # zh answers are labelled as zh: "心脏增大" finds Cardiomegaly on both sides
    assert m["ce_table"]["Cardiomegaly"]["tp"] == 3


def test_runner_dispatches_report_task(monkeypatch):
    from domainvlm.domains.radiology import report_eval
    from domainvlm.evaluate.runner import score

    real = report_eval.report_metrics
    monkeypatch.setattr(report_eval, "report_metrics", lambda *a, **k: real(*a, **{**k, "meteor": False}))  # no JVM
    recs = build_report_records(_eval_set(), qa_per_report=2)
    m = score(recs, [r.labels["report"] for r in recs])  # scores turn one of the multi-turn records
    assert m["task"] == "report" and m["bleu_4"] == pytest.approx(1.0) and m["ce_f1_micro"] == 1.0


def test_committed_config_loads():
    from pathlib import Path

    from domainvlm.config import load_config
    from domainvlm.train.config import TrainConfig

    path = Path(__file__).resolve().parents[3] / "configs" / "xray_report.yaml"
    cfg = load_config(TrainConfig, path, ["model=/models/Qwen2-VL-2B-Instruct", "mode=lora"])
    c = cfg.compact
    assert cfg.mode == "lora" and c.image_size % (c.patch_size * c.merge_size) == 0
    assert 2 * (c.image_size // c.patch_size // c.merge_size) ** 2 < cfg.max_length  # two views fit
