"""`domainvlm ask`: one question about one image (a file, or a raw wafer map from an npz by index)."""

from __future__ import annotations

import sys

from ._args import add_model_options, add_sampling_options, engine_from_args, nonneg_int, sampling_from_args

NAME = "ask"
HELP = "ask a question about an image: domainvlm ask --image map.png \"What defect is this?\""


def add_arguments(p):
    p.add_argument("question", nargs="?", help="the question (default: the answer head's own question, e.g. the "
                                               "wafer expert's \"What defect pattern does this wafer map show?\")")
    p.add_argument("--image", required=True, help="image file, DICOM, wafer npz (with --index, or file.npz#N), or "
                                                  "a wafer-map file: SEMI G85 / E142, STDF, KLARF (FILE#K = wafer K)")
    p.add_argument("--index", type=nonneg_int, help="map index when --image is an npz of wafer maps or a "
                                                    "multi-wafer map file")
    p.add_argument("--json", action="store_true", help="print the structured answer as JSON: {answer, defects, "
                   "confidence, per_pattern, abstain, reason, evidence, facts} (the fields need an answer head)")
    p.add_argument("--evidence-png", metavar="PATH", help="also write where the model sees each named pattern, "
                   "drawn over the map (models whose answer head gives evidence: the wafer expert)")
    add_model_options(p)
    add_sampling_options(p)


def run(args):
    from pathlib import Path

    from ..data.images import load_image, split_ref
    from ..data.record import IMAGE_TOKEN
    from ..errors import UserError

    if args.question is None:  # a model with an answer head has its own question; any other needs one
        from ._args import model_question

        args.question = model_question(args.model)
        if not args.question:
            raise UserError("question: missing (this model has no answer head with a default question)")
    if IMAGE_TOKEN in args.question:  # a second image slot: the processor would fail with a traceback
        raise UserError(f"question: may not contain the reserved token '{IMAGE_TOKEN}'")
    if args.index is not None and split_ref(args.image)[1]:
        raise UserError(f"--index {args.index}: {args.image} already names one item (#K); give one of the two")
    ref = args.image if args.index is None else f"{args.image}#{args.index}"
    image = load_image(ref)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one answer: a 'Loading weights' bar on stderr is noise (as chat does)
    eng = engine_from_args(args)
    if args.evidence_png:  # refuse before answering, not after printing an answer (exit 2 then looked odd)
        if Path(args.evidence_png).is_dir():
            raise UserError(f"--evidence-png {args.evidence_png}: is a folder; give a file name")
        _evidence_drawer(eng)
    if args.json and eng.answer_head is not None and hasattr(eng.answer_head, "confidence"):
        eng.answer_head.confidence = True  # asked for the structured answer: score confidence even uncalibrated
    if (args.json or args.evidence_png) and hasattr(eng.answer_head, "enable_annotations"):
        eng.answer_head.enable_annotations()  # evidence and map facts; the PNG draws the answer's own evidence
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{args.question}"}]
    ans = eng.generate([(msgs, [image])], sampling_from_args(args))[0]
    if args.json:
        import json

        a = getattr(ans, "assessment", None)
        print(json.dumps({"answer": str(ans), **(a.to_json() if a is not None else {})}, ensure_ascii=False))
    else:
        print(ans)
    if args.evidence_png:
        from ..inference.assessment import OUT_OF_DOMAIN

        a = getattr(ans, "assessment", None)
        if a is not None and a.abstain:  # the JSON has no evidence then: the PNG must not draw what was withheld
            why = ("turned the image away" if a.reason == OUT_OF_DOMAIN
                   else f"withheld its diagnosis (reason: {a.reason})")
            print(f"domainvlm: --evidence-png: nothing written to {args.evidence_png}: the answer {why}, so there "
                  "is no evidence", file=sys.stderr)
        else:
            _write_evidence(eng, msgs, image, ans, args.evidence_png)
    return 0


def _write_evidence(eng, msgs, image, answer, path) -> None:
    """The evidence the answer itself carries (the same as ``--json``'s, no second attribution); an answer
    without an assessment (freely decoded) gets the head's evidence for the diagnosis it names."""
    from ..io import atomic_path

    a = getattr(answer, "assessment", None)
    overlay = getattr(eng.answer_head, "evidence_overlay", None)
    pic = overlay(a, image) if a is not None and overlay is not None else None
    pic = pic if pic is not None else _evidence_drawer(eng)(msgs, image, answer)
    with atomic_path(path, ".png") as tmp:
        pic.save(tmp, format="PNG")


def _evidence_drawer(eng):
    from ..errors import UserError

    draw = getattr(eng.answer_head, "evidence_image", None) if eng.has_head else None
    if draw is None:
        raise UserError(f"--evidence-png: model {eng.model_dir} has no answer head that gives evidence")
    return draw
