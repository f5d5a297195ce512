"""`domainvlm calibrate` stores a temperature and threshold that ask/eval then use; `eval` reports the
confidence block and the reliability PNG; a model without a head is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from domainvlm.cli import main


@pytest.fixture(scope="module")
def wafer_model(tiny_wafer_head_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("cal") / "model"  # its own copy: calibrate writes calibration.json into it
    shutil.copytree(tiny_wafer_head_dir, d)
    return d


@pytest.fixture(scope="module")
def val_npz(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal-data") / "synth.npz"
    assert main(["data", "synth", "--n", "60", "--val-fraction", "0.5", "--out", str(out)]) == 0
    return out


def test_calibrate_then_eval_reports_calibrated_confidence(wafer_model, val_npz, tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    rc = main(["calibrate", "--model", str(wafer_model), "--data", str(val_npz), "--split", "val",
               "--target-risk", "0.5", "--quiet", "--threads", "1", "--scores", str(scores), "--force"])
    assert rc == 0
    cal = json.loads((wafer_model / "calibration.json").read_text())
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    refit = tmp_path / "refit"
    refit.mkdir()
    # --force: the untrained model's scores carry no signal, so its temperature fit runs to the range's end
    assert main(["calibrate", "--from-scores", str(scores), "--out", str(refit), "--target-risk", "0.5",
                 "--force"]) == 0
    again = json.loads((refit / "calibration.json").read_text())
    assert again["temperature"] == pytest.approx(cal["temperature"]) and again["threshold"] == cal["threshold"]
    assert cal["temperature"] > 0 and 0 <= cal["threshold"] <= 1 and cal["n"] == printed["n"] > 0
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9  # the fit never makes the val NLL worse
    assert cal["risk"] <= 0.5 or cal["coverage"] < 1
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(wafer_model), "--data", str(val_npz), "--split", "val", "--out", str(out),
                 "--quiet", "--threads", "1"]) == 0
    m = json.loads(out.read_text())
    c = m["confidence"]
    assert {"ece", "brier", "accuracy_at_coverage_95", "accuracy_at_coverage_90", "risk_coverage"} <= set(c)
    assert c["threshold"] == cal["threshold"] and 0 <= c["ece"] <= 1 and c["n"] == cal["n"]
    assert c["accuracy"] == pytest.approx(m["exact_match"] * m["n"] / c["n"])  # same answers, same scoring
    assert (tmp_path / "m.reliability.png").stat().st_size > 1000


def test_calibrate_out_folder_and_model_without_head(tiny_model_dir, wafer_model, val_npz, tmp_path, capsys):
    rc = main(["calibrate", "--model", str(wafer_model), "--data", str(val_npz), "--split", "val", "--limit", "8",
               "--out", str(tmp_path), "--quiet", "--threads", "1", "--force"])
    assert rc == 0 and json.loads((tmp_path / "calibration.json").read_text())["limit"] == 8
    capsys.readouterr()
    assert main(["calibrate", "--model", str(tiny_model_dir), "--data", str(val_npz), "--quiet"]) == 2
    assert "no constrained answer head" in capsys.readouterr().err
    assert not (tiny_model_dir / "calibration.json").exists()


def test_calibrate_missing_out_folder_is_refused_before_the_model_runs(val_npz, tmp_path, capsys, monkeypatch):
    import domainvlm.commands.calibrate as cal

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(cal, "engine_from_args", no_model, raising=False)
    missing = tmp_path / "nope"
    assert main(["calibrate", "--data", str(val_npz), "--split", "val", "--out", str(missing), "--quiet"]) == 2
    assert f"--out {missing}: not a folder" in capsys.readouterr().err
    assert not missing.exists()


def _scores(path, rows):
    path.write_text("".join(json.dumps({"data": "val", "gold": g, "answered": a, "line_logprobs": lp}) + "\n"
                            for lp, g, a in rows))
    return path


def test_a_target_risk_no_threshold_meets_is_warned_in_one_line(tmp_path, capsys):
    """The three most confident answers are wrong: no threshold reaches 2 % risk; what is stored is said."""
    wrong, right = ([0.0, -3.0], 1, 0), ([-0.5, -1.0], 0, 0)
    scores = _scores(tmp_path / "s.jsonl", [wrong] * 3 + [right])
    # --force: with its most confident answers wrong the temperature fit runs to its upper bound (warned too)
    assert main(["calibrate", "--from-scores", str(scores), "--out", str(tmp_path), "--target-risk", "0.02",
                 "--force"]) == 0
    cap = capsys.readouterr()
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["target_reachable"] is False and cal["risk"] == 1.0 and cal["coverage"] == 0.75
    warn = [x for x in cap.err.splitlines() if "warning" in x]
    assert warn[0].startswith("domainvlm: warning: the temperature fit ran to its upper bound")
    assert warn[1:] == [f"domainvlm: warning: no threshold meets --target-risk 0.02 on these 4 val answers; stored "
                    f"threshold {cal['threshold']:.4f} in {tmp_path / 'calibration.json'} (answers 75.0% of them, "
                    "error rate 100.0% among those)"]
    assert json.loads(cap.out.strip().splitlines()[-1])["risk"] == 1.0
    assert main(["calibrate", "--from-scores", str(scores), "--out", str(tmp_path), "--target-risk", "0.8",
                 "--force"]) == 0
    assert "no threshold meets" not in capsys.readouterr().err  # 3 wrong of 4 answered: met


def test_max_abstain_missing_the_target_is_warned(tmp_path, capsys):
    right, wrong = ([0.0, -3.0], 0, 0), ([-0.5, -1.0], 1, 0)  # the confident answers are the right ones
    scores = _scores(tmp_path / "s.jsonl", [right] * 3 + [wrong])
    assert main(["calibrate", "--from-scores", str(scores), "--out", str(tmp_path), "--target-risk", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["calibrate", "--from-scores", str(scores), "--out", str(tmp_path), "--target-risk", "0",
                 "--max-abstain", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("domainvlm: warning: --max-abstain 0 lowered the threshold below "
                                               "what --target-risk 0 needs; stored threshold ")
    assert err[0].endswith("(answers 100.0% of them, error rate 25.0% among those)")


def test_a_temperature_at_the_end_of_its_range_is_refused_unless_forced(tmp_path, capsys):
    """Val answers without an error drive the NLL fit to T = 0.02 (every confidence ~100%); answers whose
    scores never favour the gold line drive it to 50. Neither is a fit: the stored calibration stays as it is
    unless --force, which stores it with a warning."""
    kept = {"temperature": 0.37, "threshold": 0.5}
    (tmp_path / "calibration.json").write_text(json.dumps(kept))
    right = _scores(tmp_path / "right.jsonl", [([0.0, -3.0], 0, 0), ([-0.5, -1.0], 0, 0), ([-3.0, 0.0], 1, 1)])
    flat = _scores(tmp_path / "flat.jsonl", [([0.0, -1.0], 1, 0), ([-1.0, 0.0], 0, 1)] * 2)
    for scores, bound, fix in [
            (right, "lower bound T=0.02: 0 error(s) in these 3 val answers", "calibrate on more val data"
             " (enough to hold some errors)"),
            (flat, "upper bound T=50: the line scores do not favour the gold line on these 4", "check that the val"
             " labels are this model's classes, or train it further")]:
        assert main(["calibrate", "--from-scores", str(scores), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"the temperature fit ran to its {bound}" in err[0], err
        assert err[0].endswith("left as it is - " + fix + ", or pass --force to store it anyway")
        assert json.loads((tmp_path / "calibration.json").read_text()) == kept
    assert main(["calibrate", "--from-scores", str(right), "--out", str(tmp_path), "--force"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("domainvlm: warning: the temperature fit ran to its lower bound")
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["temperature"] == pytest.approx(0.02, rel=1e-3) and cal["temperature_at_bound"] == "lower"
    one_error = _scores(tmp_path / "one.jsonl", [([0.0, -3.0], 0, 0)] * 5 + [([-0.5, -1.0], 1, 0)])
    assert main(["calibrate", "--from-scores", str(one_error), "--out", str(tmp_path)]) == 0  # identified
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert 0.02 < cal["temperature"] < 50 and cal["temperature_at_bound"] is None


def test_a_fit_that_raises_the_val_ece_is_said(capsys, tmp_path):
    """A 150-map fit stored T 1.16 that took the val ECE from 0.0130 to 0.0151 with no word of it."""
    from domainvlm.commands.calibrate import _warn_worse_ece

    _warn_worse_ece({"ece_before": 0.01303, "ece_after": 0.01505, "n": 150}, tmp_path / "calibration.json")
    err = capsys.readouterr().err
    assert "raises the val ECE from 0.0130 to 0.0150 on these 150 answers" in err
    _warn_worse_ece({"ece_before": 0.02, "ece_after": 0.01, "n": 150}, tmp_path / "calibration.json")
    assert capsys.readouterr().err == ""
