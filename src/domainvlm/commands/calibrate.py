"""`domainvlm calibrate`: fit a head's confidence on labelled val data and store it in the model folder.

Every val record is answered by the model's constrained head with T = 1; the temperature that minimises the
negative log-likelihood of the gold line is fitted (temperature scaling), then the abstention threshold with
the highest coverage whose error rate on these records is at most ``--target-risk``. Both go to
``calibration.json`` in the model folder (or ``--out``), written atomically; ``ask``, ``predict``, ``eval``,
``serve`` and the web UI then report calibrated confidence and abstain below the threshold. A temperature
at an end of the fit's range (no errors on val: 0.02; scores unrelated to the labels: 50) is not identified:
refused, the stored calibration kept, unless ``--force``.

``--input-check TRAIN_DATA`` first fits the head's out-of-domain input check (heads with ``fit_input_check``:
classify) from TRAIN_DATA's images, its threshold on the --data images; ``--input-check-only`` stops there.
"""

from __future__ import annotations

from ._args import add_model_options, engine_from_args, nonneg_float, out_file, positive_int, share

NAME = "calibrate"
HELP = "fit confidence calibration (temperature) and the abstention threshold on val data; stored in the model"
DEFAULT_RISK = 0.02  # the bundled wafer expert (97-98% exact on val) then abstains on about 1.5% of maps


def add_arguments(p):
    p.add_argument("--data", action="append",
                   help="labelled val data (record JSONL or a raw source); repeatable: fitted on all together")
    p.add_argument("--split", help="only records of this split (e.g. val)")
    p.add_argument("--limit", type=positive_int,
                   help="first N records of each --data (and of --input-check's data) only")
    p.add_argument("--sample", type=positive_int,
                   help="a seeded random N records of each --data (and of --input-check's data)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--target-risk", type=nonneg_float, default=DEFAULT_RISK,
                   help=f"highest error rate allowed among the answers not abstained (default {DEFAULT_RISK})")
    p.add_argument("--max-abstain", type=share,
                   help="cap on the share of each --data's answers abstained for low confidence (the threshold is "
                        "lowered until every source meets it, even if the target risk is then missed)")
    p.add_argument("--out", help="folder for calibration.json (default: the model folder)")
    p.add_argument("--scores", type=out_file, help="also write each record's line log-probs, gold and answered line "
                                                   "(JSONL), to study other targets without re-running the model")
    p.add_argument("--from-scores", help="fit from a --scores file of an earlier run instead of running the model "
                                         "(needs --out or --model for the destination)")
    p.add_argument("--input-check", metavar="TRAIN_DATA",
                   help="also fit the out-of-domain input check (heads that have one: classify): statistics of "
                        "TRAIN_DATA's labelled images, threshold on the --data images; stored in the model folder")
    p.add_argument("--input-check-split", default="train", help="split of --input-check's data (default train)")
    p.add_argument("--max-reject", type=share, default=0.02,
                   help="share of the --data images the input check may turn away (default 0.02)")
    p.add_argument("--input-check-only", action="store_true",
                   help="fit only the input check (calibration.json is left as it is)")
    p.add_argument("--force", action="store_true",
                   help="store the temperature even when its fit ran to an end of the search range (0.02 or 50: "
                        "e.g. val answers without a single error, where T is not identified); refused otherwise")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="question language for raw sources")
    p.add_argument("--image-root", help="folder that relative image paths are relative to")
    p.add_argument("--batch-size", type=positive_int, help="records per batch")
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)


def run(args):
    import json
    from pathlib import Path

    from ..errors import UserError
    from ..inference.confidence import save

    if args.target_risk >= 1:
        raise UserError(f"--target-risk {args.target_risk}: must be below 1")
    if bool(args.data) == bool(args.from_scores):
        raise UserError("give --data (run the model on val data) or --from-scores (an earlier run's --scores)")
    if args.input_check_only and not (args.input_check and args.data):
        raise UserError("--input-check-only needs --input-check TRAIN_DATA and --data VAL_DATA")
    if args.from_scores:
        rows, per_data, info = _read_scores(args.from_scores), {}, {"from_scores": str(args.from_scores)}
        dest = Path(args.out or args.model or "")
    else:
        if args.out and not Path(args.out).is_dir():  # before the model runs over the val data, not after
            raise UserError(f"--out {args.out}: not a folder")
        eng = engine_from_args(args)
        dest = Path(args.out) if args.out else Path(eng.model_dir)
        if args.input_check:
            print(json.dumps({"input_check": _input_check(args, eng, dest)}))
            if args.input_check_only:
                return 0
        rows, per_data, model_dir, info = _collect(args, eng)
    if not rows:
        raise UserError("no answer with a confidence whose gold label set is a valid line: nothing to fit")
    if not dest.is_dir():
        raise UserError(f"--out {dest}: not a folder")
    if args.scores:
        from ..io import write_jsonl

        write_jsonl(args.scores, [{"data": d, "gold": g, "answered": c, "line_logprobs": lp} for lp, g, c, d in rows])
    cal = fit(rows, per_data, args.target_risk, args.max_abstain)
    cal.info.update(info)
    _check_temperature(cal, dest, args.force)
    path = save(dest, cal)
    i = cal.info
    _warn_missed_target(i, cal.threshold, path)
    _warn_worse_ece(i, path)
    print(json.dumps({"temperature": round(cal.temperature, 4), "threshold": round(cal.threshold, 4),
                      "coverage": round(i["coverage"], 4), "risk": round(i["risk"], 5),
                      "ece_before": round(i["ece_before"], 5), "ece_after": round(i["ece_after"], 5), "n": i["n"],
                      "file": str(path)}))
    return 0


def _check_temperature(cal, dest, force: bool) -> None:
    """A temperature at an end of the fit's range is no fit (the val NLL still falls beyond it): refused, so a
    good calibration.json is not replaced by one claiming ~100% confidence for everything; --force stores it,
    with a warning."""
    import sys

    from ..errors import UserError

    bound, n = cal.info.get("temperature_at_bound"), cal.info["n"]
    if not bound:
        return
    errors = round(n * (1 - cal.info["accuracy"]))
    if bound == "lower":
        why = (f"the temperature fit ran to its lower bound T={cal.temperature:g}: {errors} error(s) in these {n} "
               "val answers, too few to fit T (it would make every confidence ~100%)")
        fix = "calibrate on more val data (enough to hold some errors)"
    else:
        why = (f"the temperature fit ran to its upper bound T={cal.temperature:g}: the line scores do not favour "
               f"the gold line on these {n} val answers (it would flatten every confidence)")
        fix = "check that the val labels are this model's classes, or train it further"
    if force:
        print(f"domainvlm: warning: {why}; stored anyway (--force)", file=sys.stderr)
        return
    raise UserError(f"{why}; {dest / 'calibration.json'} left as it is - {fix}, or pass --force to store it anyway")


def _warn_worse_ece(info: dict, path) -> None:
    """One line on stderr when the fitted temperature raises the val ECE: the fit minimises the NLL, which on
    few or easy answers can leave the confidences less calibrated by ECE than before; stored all the same."""
    import sys

    if info["ece_after"] <= info["ece_before"]:
        return
    print(f"domainvlm: warning: the fitted temperature raises the val ECE from {info['ece_before']:.4f} to "
          f"{info['ece_after']:.4f} on these {info['n']} answers (the fit minimises the NLL); stored in {path}; "
          "more val data gives a steadier fit", file=sys.stderr)


def _warn_missed_target(info: dict, threshold: float, path) -> None:
    """One line on stderr when the stored threshold does not meet --target-risk on these answers: no threshold
    does, or --max-abstain lowered it; it says what was stored, so nobody reads the target as met."""
    import sys

    if info["risk"] <= info["target_risk"]:
        return
    why = (f"no threshold meets --target-risk {info['target_risk']:g} on these {info['n']} val answers"
           if not info["target_reachable"] else
           f"--max-abstain {info['max_abstain']:g} lowered the threshold below what --target-risk "
           f"{info['target_risk']:g} needs")
    print(f"domainvlm: warning: {why}; stored threshold {threshold:.4f} in {path} (answers {info['coverage']:.1%} "
          f"of them, error rate {info['risk']:.1%} among those)", file=sys.stderr)


def _records(args, path, split):
    from ..data.sources import load_any
    from ..errors import UserError
    from ..evaluate.runner import sample_records
    from ..io import resolve_path

    # model_dir: read in the model's taxonomy, as eval does (a label it lacks names its row, not a silent drop)
    from ..evaluate.for_model import records_for_model
    from ..models.loader import default_model_dir

    recs = load_any(path, split=split, allow_pickle=args.allow_pickle, langs=(args.lang,), explain=False,
                    image_root=args.image_root, model_dir=args.model)
    recs = records_for_model(recs, args.model or default_model_dir(), path, (args.lang,))[: args.limit]
    recs = sample_records(recs, args.sample, args.sample_seed)
    if not recs:
        raise UserError(f"{path}: no records" + (f" in split {split!r}" if split else ""))
    return recs, resolve_path(args.image_root) if args.image_root else resolve_path(path).parent


def _input_check(args, eng, dest) -> dict:
    """Fit the head's out-of-domain input check: statistics of --input-check's images, threshold on --data's."""
    from ..errors import UserError

    head = eng.answer_head
    if head is None or not hasattr(head, "fit_input_check"):
        raise UserError(f"--input-check: model {eng.model_dir} has no answer head with a fitted input check")
    if not dest.is_dir():
        raise UserError(f"--out {dest}: not a folder")
    train, base = _records(args, args.input_check, args.input_check_split)
    val = [_records(args, p, args.split) for p in args.data]
    if len({str(b) for _, b in val}) > 1:
        raise UserError("--input-check: give one --data (its images set the threshold)")
    info = {"train_data": str(args.input_check), "train_split": args.input_check_split, "val_data": args.data,
            "val_split": args.split}
    return head.fit_input_check(train, val[0][0], dest, args.max_reject, base, val[0][1], info)


def _collect(args, eng):
    """Run the model's head (T = 1) on every --data: rows (line log-probs, gold line, answered line, data)."""
    from ..errors import UserError
    from ..evaluate import calibration as cm
    from ..evaluate.confidence_eval import confidence_head, pairs
    from ..evaluate.runner import evaluate_records
    from ..inference.engine import Sampling

    head = confidence_head(eng, uncalibrated=True)
    if head is None:
        raise UserError(f"{eng.model_dir}: the model has no constrained answer head (config.json domainvlm."
                        "answer_head), so there is no confidence to calibrate")
    rows, per_data = [], {}
    for path in args.data:
        recs, base = _records(args, path, args.split)
        answers: list = []
        evaluate_records(eng, recs, base, args.batch_size, Sampling(max_new_tokens=96, temperature=0.0),
                         progress=not args.quiet, answers_out=answers)
        got, other = pairs(recs, answers)
        rows += [(a.line_logprobs, cm.gold_index(a, g), a.lines.index(tuple(a.labels)), str(path))
                 for a, g in got if cm.gold_index(a, g) is not None]
        per_data[str(path)] = {"n": len(recs), "scored": len(got), "not_scored": other}
    info = {"split": args.split, "limit": args.limit, "sample": args.sample, "sample_seed": args.sample_seed,
            "lang": args.lang, "tta": bool(getattr(head, "tta", False))}
    return rows, per_data, eng.model_dir, info


def _read_scores(path) -> list:
    import json

    from ..errors import UserError
    from ..io import iter_lines

    rows = []
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows.append((list(map(float, r["line_logprobs"])), int(r["gold"]), int(r["answered"]), str(r["data"])))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{n}: not a --scores row ({e.__class__.__name__}: {e})") from None
    return rows


def fit(rows, per_data: dict, target_risk: float, max_abstain: float | None = None):
    """Temperature (val NLL) and threshold (target risk, at most ``max_abstain`` of each source abstained)
    from rows (line log-probs, gold, answered, data)."""
    from datetime import datetime, timezone

    import torch

    from ..evaluate import calibration as cm
    from ..inference.confidence import Calibration

    lp = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    gold = torch.tensor([r[1] for r in rows])
    chosen = torch.tensor([r[2] for r in rows])
    correct = (gold == chosen).tolist()
    t = cm.fit_temperature(lp, gold)
    conf_at = lambda temp: torch.softmax(lp / temp, -1).gather(1, chosen[:, None])[:, 0].tolist()  # noqa: E731
    before, after = conf_at(1.0), conf_at(t)
    thr, cov, risk = cm.threshold_for_risk(after, correct, target_risk)
    reachable = risk <= target_risk  # else no threshold meets it: the most confident answers are kept
    if max_abstain is not None:
        for d in {r[3] for r in rows}:
            c = sorted(after[i] for i, r in enumerate(rows) if r[3] == d)
            k = int(max_abstain * len(c))  # at most k of this source's answers below the threshold
            thr = min(thr, c[k]) if k < len(c) else thr
        kept = [ok for x, ok in zip(after, correct) if x >= thr]
        cov, risk = len(kept) / len(after), 1 - sum(kept) / max(1, len(kept))
    for d in sorted({r[3] for r in rows}):  # each source's calibrated numbers (the fit is shared)
        idx = [i for i, r in enumerate(rows) if r[3] == d]
        c, k = [after[i] for i in idx], [correct[i] for i in idx]
        per_data.setdefault(d, {"n": len(idx)}).update(
            ece=cm.ece(c, k), accuracy=sum(k) / len(k), abstain_rate=sum(x < thr for x in c) / len(c))
    info = {"target_risk": target_risk, "max_abstain": max_abstain, "coverage": cov, "risk": risk, "n": len(rows),
            "target_reachable": reachable, "temperature_at_bound": cm.at_bound(t),
            "accuracy": sum(correct) / len(rows), "nll_before": cm.nll(lp, gold, 1.0), "nll_after": cm.nll(lp, gold, t),
            "ece_before": cm.ece(before, correct), "ece_after": cm.ece(after, correct), "data": per_data,
            "fitted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return Calibration(t, thr, info)
