"""R2Gen-style report metrics (domains/radiology/report_metrics.py) against pycocoevalcap called directly."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("pycocoevalcap")

from pycocoevalcap.bleu.bleu import Bleu 
from pycocoevalcap.cider.cider import Cider 
from pycocoevalcap.rouge.rouge import Rouge 

from domainvlm.errors import UserError 
from domainvlm.domains.radiology import report_metrics as rm 
from domainvlm.domains.radiology.report_metrics import clean_report_en, preprocess, report_metrics, tokenize_zh 

PREDS = [
    "The heart size is normal. The lungs are clear. No pneumothorax or pleural effusion.",
    "Mild cardiomegaly. No focal consolidation.",
    "There is a small left pleural effusion. The x-ray shows bibasilar atelectasis.",
    "No acute cardiopulmonary abnormality.",
]
REFS = [
    "Heart size normal. Lungs are clear. No pleural effusions or pneumothoraces.",
    "1. No acute cardiopulmonary abnormality. 2. Mild cardiomegaly, stable.",
    "Small left effusion.. Bibasilar opacities, likely atelectasis.",
    "The lungs are clear. There is no pleural effusion or pneumothorax.",
]


def _direct(preds, refs, lang):
    res = {i: [preprocess(p, lang)] for i, p in enumerate(preds)}
    gts = {i: [preprocess(x, lang) for x in ([r] if isinstance(r, str) else r)] for i, r in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{n + 1}": b for n, b in enumerate(bleu)}
    out["rouge_l"] = Rouge().compute_score(gts, res)[0]
    out["cider"] = Cider().compute_score(gts, res)[0]
    return out, gts, res


def test_preprocessing_is_r2gens():
    assert clean_report_en("1. No acute cardiopulmonary abnormality. 2. Mild cardiomegaly, stable.") == \
        "no acute cardiopulmonary abnormality . mild cardiomegaly stable ."
    # '..' collapsed, quotes and slashes removed, '-' kept (R2Gen's ':-[' character range excludes it)
    assert clean_report_en('Small "left" effusion.. Atelectasis/scarring (x-ray).') == \
        "small left effusion . atelectasisscarring x-ray ."
    assert clean_report_en("Lungs\nclear.  ") == "lungs clear ."
    assert clean_report_en("") == " ."
    assert tokenize_zh("心脏大小正常，X光片显示无PICC管。") == "心 脏 大 小 正 常 x 光 片 显 示 无 picc 管"
    with pytest.raises(UserError):
        preprocess("x", "fr")


def test_matches_pycocoevalcap_direct_en_and_meteor():
    got = report_metrics(PREDS, REFS, meteor=shutil.which("java") is not None)
    want, gts, res = _direct(PREDS, REFS, "en")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert set(got) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    if shutil.which("java") is None:
        pytest.skip("java not installed: METEOR not checked")
    direct_meteor, _ = rm._meteor_scorer().compute_score(gts, res)
    assert got["meteor"] == pytest.approx(direct_meteor, abs=1e-6) and 0 < got["meteor"] < 1


def test_matches_direct_multi_reference_and_zh(shared_data):
    text = (shared_data / "iu-xray-samples/pairs_with_original_reports.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(x) for x in text.splitlines()]
    preds = [r["caption_en_gpt"] for r in rows]
    refs = [[f"{r['findings']} {r['impression']}", r["findings"]] for r in rows]
    got = report_metrics(preds, refs, meteor=False)
    want, _, _ = _direct(preds, refs, "en")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert got["meteor"] is None
    zh_pred = [r["caption_zh_gpt"] for r in rows[::-1]]  # mismatched pairs: low but non-zero scores
    zh_ref = [r["caption_zh_gpt"] for r in rows]
    got = report_metrics(zh_pred, zh_ref, lang="zh", meteor=False)
    want, _, _ = _direct(zh_pred, zh_ref, "zh")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert 0 < got["bleu_4"] < 1


def test_hand_checkable():
    same = report_metrics(PREDS, PREDS, meteor=False)
    for n in range(1, 5):
        assert same[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert same["rouge_l"] == pytest.approx(1.0)
    # disjoint words still share R2Gen's sentence-final "." token: BLEU-1 = 1/3, BLEU-4 = 0
    d = report_metrics(["alpha beta"], ["gamma delta"], meteor=False)
    assert d["bleu_1"] == pytest.approx(1 / 3, abs=1e-6) and d["bleu_4"] == pytest.approx(0, abs=1e-6)
    z = report_metrics(["心脏正常"], ["气胸"], lang="zh", meteor=False)
    assert z["bleu_1"] == pytest.approx(0, abs=1e-6) and z["rouge_l"] == 0 and z["cider"] == 0


def test_meteor_without_java(monkeypatch):
    monkeypatch.setattr(rm, "_meteor", None)
    monkeypatch.setattr(rm.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="Java"):
        got = report_metrics(["no effusion"], ["no effusion"])
    assert got["meteor"] is None and got["bleu_1"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("preds, refs", [([], []), (["a"], []), (["a"], [[]]), ([1], ["a"]), (["a"], [["a", 2]])])
def test_bad_inputs(preds, refs):
    with pytest.raises(UserError):
        report_metrics(preds, refs, meteor=False)
