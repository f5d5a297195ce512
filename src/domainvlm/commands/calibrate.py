"""`domainvlm calibrate`: fit a head's confidence on labelled val data and store it in the model folder.

Every val record is answered by the model's constrained head with T = 1; the temperature that minimises the
negative log-likelihood of the gold line is fitted (temperature scaling), then the abstention threshold with
the highest coverage whose error rate on these records is at most ``--target-risk``. Both go to
``calibration.json`` in the model folder (or ``--out``), written atomically; ``ask``, ``predict``, ``eval``,
``serve`` and the web UI then report calibrated confidence and abstain below the threshold.
"""

from __future__ import annotations

from ._args import add_model_options, engine_from_args, nonneg_float, positive_int

NAME = "calibrate"
HELP = "fit confidence calibration (temperature) and the abstention threshold on val data; stored in the model"
DEFAULT_RISK = 0.01


def add_arguments(p):
    p.add_argument("--data", required=True, action="append",
                   help="labelled val data (record JSONL or a raw source); repeatable: fitted on all together")
    p.add_argument("--split", help="only records of this split (e.g. val)")
    p.add_argument("--limit", type=positive_int, help="first N records of each --data only")
    p.add_argument("--sample", type=positive_int, help="a seeded random N records of each --data")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--target-risk", type=nonneg_float, default=DEFAULT_RISK,
                   help=f"highest error rate allowed among the answers not abstained (default {DEFAULT_RISK})")
    p.add_argument("--out", help="folder for calibration.json (default: the model folder)")
    p.add_argument("--scores", help="also write each record's line log-probs, gold and answered line (JSONL), to "
                                    "study other targets without re-running the model")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="question language for raw sources")
    p.add_argument("--image-root", help="folder that relative image paths are relative to")
    p.add_argument("--batch-size", type=positive_int, help="records per batch")
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)


def run(args):
    import json
    from datetime import datetime, timezone
    from pathlib import Path

    import torch

    from ..data.sources import load_any
    from ..errors import UserError
    from ..evaluate import calibration as cm
    from ..evaluate.confidence_eval import confidence_head, pairs
    from ..evaluate.runner import evaluate_records, sample_records
    from ..inference.confidence import Calibration, save
    from ..inference.engine import Sampling
    from ..io import resolve_path

    if args.target_risk >= 1:
        raise UserError(f"--target-risk {args.target_risk}: must be below 1")
    eng = engine_from_args(args)
    head = confidence_head(eng, uncalibrated=True)
    if head is None:
        raise UserError(f"{eng.model_dir}: the model has no constrained answer head (config.json domainvlm."
                        "answer_head), so there is no confidence to calibrate")
    got, per_data = [], {}
    for path in args.data:
        recs = load_any(path, split=args.split, allow_pickle=args.allow_pickle, langs=(args.lang,),
                        explain=False, image_root=args.image_root)[: args.limit]
        recs = sample_records(recs, args.sample, args.sample_seed)
        if not recs:
            raise UserError(f"{path}: no records" + (f" in split {args.split!r}" if args.split else ""))
        base = resolve_path(args.image_root) if args.image_root else resolve_path(path).parent
        answers: list = []
        evaluate_records(eng, recs, base, args.batch_size, Sampling(max_new_tokens=96, temperature=0.0),
                         progress=not args.quiet, answers_out=answers)
        p, other = pairs(recs, answers)
        got += [(a, g, path) for a, g in p]
        per_data[str(path)] = {"n": len(recs), "scored": len(p), "not_scored": other}
    fit = [(a, g, d) for a, g, d in got if cm.gold_index(a, g) is not None]
    if not fit:
        raise UserError("no answer with a confidence whose gold label set is a valid line: nothing to fit")
    lp = torch.tensor([a.line_logprobs for a, _, _ in fit])
    gold = torch.tensor([cm.gold_index(a, g) for a, g, _ in fit])
    chosen = torch.tensor([a.lines.index(tuple(a.labels)) for a, _, _ in fit])
    correct = [cm.is_correct(a, g) for a, g, _ in fit]
    t = cm.fit_temperature(lp, gold)
    if args.scores:
        from ..io import write_jsonl

        write_jsonl(args.scores, [{"data": str(d), "gold": int(g), "answered": int(c), "line_logprobs": a.line_logprobs}
                                  for (a, _, d), g, c in zip(fit, gold.tolist(), chosen.tolist())])

    def conf_at(temp):
        return torch.softmax(lp.double() / temp, -1).gather(1, chosen[:, None])[:, 0].tolist()

    before, after = conf_at(1.0), conf_at(t)
    thr, cov, risk = cm.threshold_for_risk(after, correct, args.target_risk)
    for d in per_data:  # each source's calibrated ECE (the fit is shared)
        idx = [i for i, (_, _, src) in enumerate(fit) if str(src) == d]
        per_data[d]["ece"] = cm.ece([after[i] for i in idx], [correct[i] for i in idx]) if idx else None
    info = {"target_risk": args.target_risk, "coverage": cov, "risk": risk, "n": len(fit),
            "accuracy": sum(correct) / len(fit), "nll_before": cm.nll(lp.double(), gold, 1.0),
            "nll_after": cm.nll(lp.double(), gold, t), "ece_before": cm.ece(before, correct),
            "ece_after": cm.ece(after, correct), "data": per_data, "split": args.split, "limit": args.limit,
            "sample": args.sample, "sample_seed": args.sample_seed,
            "lang": args.lang, "tta": bool(getattr(head, "tta", False)),
            "fitted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    dest = Path(args.out) if args.out else Path(eng.model_dir)
    if not dest.is_dir():
        raise UserError(f"--out {dest}: not a folder")
    path = save(dest, Calibration(t, thr, info))
    print(json.dumps({"temperature": round(t, 4), "threshold": round(thr, 4), "coverage": round(cov, 4),
                      "risk": round(risk, 5), "ece_before": round(info["ece_before"], 5),
                      "ece_after": round(info["ece_after"], 5), "n": len(fit), "file": str(path)}))
    return 0
