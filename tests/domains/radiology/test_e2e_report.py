"""End to end on CPU: IU-Xray sample pairs -> report instruction data -> tiny compact model -> eval metrics.json.

Ten images can only show that the pipeline runs; the scores of this tiny model mean nothing.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from domainvlm.cli import main

# as tests/test_e2e_wafer.py, smaller still: 32 px / patch 4 / merge 2 -> 16 image tokens per view
TINY_TRAIN = ["compact.image_size=32", "compact.patch_size=4", "compact.merge_size=2", "compact.vision_dim=32",
              "compact.vision_depth=1", "compact.vision_heads=2", "compact.hidden=64", "compact.layers=2",
              "compact.heads=2", "compact.kv_heads=1", "compact.intermediate=128", "compact.vocab_size=600"]
NUMERIC = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "ce_precision_micro", "ce_recall_micro",
           "ce_f1_micro", "ce_precision_macro", "ce_recall_macro", "ce_f1_macro", "collapse_rate")


def _check_metrics(m: dict, n: int) -> None:
    assert m["task"] == "report" and m["n"] == n
    for k in NUMERIC:
        assert isinstance(m[k], float) and math.isfinite(m[k]), (k, m[k])
    assert 0.0 <= m["collapse_rate"] <= 1.0 and 1 <= m["distinct_answers"] <= n
    if shutil.which("java"):
        assert isinstance(m["meteor"], float), m["meteor"]
    else:
        assert m["meteor"] is None
    assert len(m["ce_table"]) == 14 and sum(x["count"] for x in m["most_common_answers"]) <= n


@pytest.mark.slow
def test_report_build_train_eval(shared_data, tmp_path):
    pairs = shared_data / "iu-xray-samples" / "pairs_with_original_reports.jsonl"
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "build", "--source", str(pairs), "--out", str(data), "--qa-per-report", "2"]) == 0
    assert {p.name for p in data.glob("*.jsonl")} == {"train.jsonl", "val.jsonl", "test.jsonl"}
    first = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    assert len(first["messages"]) >= 6 and first["labels"]["report"] == first["messages"][1]["content"]
    rc = main(["train", f"data={data / 'train.jsonl'}", f"val_data={data / 'val.jsonl'}", f"output_dir={run}",
               "max_steps=4", "batch_size=2", "lr=3e-3", "max_length=512", "eval_every=0", "eval_samples=0",
               "save_every=0", "log_every=2", "--no-progress", *TINY_TRAIN])
    assert rc == 0 and (run / "model" / "model.safetensors").exists()
    out, preds = tmp_path / "metrics.json", tmp_path / "preds.jsonl"
    assert main(["eval", "--model", str(run / "model"), "--data", str(data / "test.jsonl"), "--out", str(out),
                 "--predictions", str(preds), "--max-new-tokens", "32", "--quiet"]) == 0
    m = json.loads(out.read_text())
    _check_metrics(m, 4)
    assert len(preds.read_text().splitlines()) == 4
    # the raw source works too, and its split selects the same four studies
    raw = tmp_path / "raw.json"
    assert main(["eval", "--model", str(run / "model"), "--data", str(pairs), "--split", "test", "--out", str(raw),
                 "--max-new-tokens", "32", "--quiet"]) == 0
    _check_metrics(json.loads(raw.read_text()), 4)
