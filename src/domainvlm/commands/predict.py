"""`domainvlm predict`: batch inference over a folder, CSV or JSONL of (image, question) -> JSONL or CSV.

Rows are generated ``--batch-size`` at a time on the device. Re-running the same command resumes: rows already
in the output are skipped (a row recorded for another question, image or model stops the run: ``--overwrite``). A row that
fails (missing or unreadable image, bad JSON line) gets its ``error`` filled in and the batch carries on; the
exit code is 1 when any row failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._args import add_model_options, add_sampling_options, engine_from_args, positive_int, sampling_from_args

NAME = "predict"
HELP = "batch inference: domainvlm predict INPUT (folder | map file | .csv | .jsonl) -o answers.jsonl|csv"


def add_arguments(p):
    p.add_argument("input", help="folder of images and/or wafer-map files, or one map file (G85, E142, STDF, "
                                 "KLARF: one row per wafer, image FILE#K), CSV (image,question[,id]) or JSONL "
                                 "({image, question[, id]} or domainvlm records)")
    p.add_argument("-o", "--output", help="results .jsonl or .csv (default: INPUT.predictions.jsonl)")
    p.add_argument("--format", choices=["jsonl", "csv"], help="output format (default: from --output's "
                   "extension, else jsonl); rows of an answer head carry its structured answer: JSONL defects, "
                   "confidence, per_pattern, abstain, reason, evidence, facts; CSV columns defects, confidence, "
                   "abstain, reason, per_pattern (JSON)")
    p.add_argument("-q", "--question", help="question for every image (folders, map files), or for CSV / JSONL "
                   "rows without one (default for folders and map files: the answer head's own question, e.g. "
                   "the wafer expert's \"What defect pattern does this wafer map show?\")")
    p.add_argument("--batch-size", type=positive_int,
                   help="rows per batch, written before the next starts (default 1024 on a GPU with an answer "
                        "head, as eval, else 8)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--retry-errors", action="store_true", help="when resuming, redo rows that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lot-report", metavar="DIR", help="also write a per-lot summary of the wafer maps into DIR "
                                                       "(wafers per pattern, yield per wafer, a PNG grid)")
    add_model_options(p)
    add_sampling_options(p)


def _default_output(inp: Path, fmt: str | None = None) -> Path:
    from ..io import resolve_path

    inp = resolve_path(inp)
    return inp.parent / f"{inp.name if inp.is_dir() else inp.stem}.predictions.{fmt or 'jsonl'}"


def _output(args) -> Path:
    from ..errors import UserError

    if not args.output:
        return _default_output(Path(args.input), args.format)
    out = Path(args.output).expanduser()
    ext = out.suffix.lower().lstrip(".")
    if args.format and ext != args.format and not (args.format == "jsonl" and ext == "ndjson"):
        raise UserError(f"--output {out}: does not end in .{args.format} (--format {args.format})")
    return out


def _load_rows(rows, size=None) -> list:
    """Per row ``(conversation, None)`` or ``(None, error message)`` (a row that failed to parse keeps its own)."""
    from ..inference.loading import load_conversations

    ok = [r for r in rows if not r.error]
    loaded = iter(load_conversations([(r.messages, r.images, r.base_dir, r.where) for r in ok], size))
    return [(None, r.error) if r.error else next(loaded) for r in rows]


def predict_rows(engine, rows, writer, sampling, batch_size: int, progress=None) -> None:
    """Generate answers for ``rows`` batch by batch, writing each batch before the next starts."""
    from ..inference.prefetch import even_chunks, prefetched

    size = getattr(engine, "canvas_size", None)
    for chunk, loaded in prefetched(even_chunks(rows, batch_size), lambda c: _load_rows(c, size)):
        ok = [i for i, (conv, _) in enumerate(loaded) if conv is not None]
        answers: dict[int, tuple] = {i: (None, err) for i, (conv, err) in enumerate(loaded) if conv is None}
        if ok:
            try:
                texts = engine.generate([loaded[i][0] for i in ok], sampling)
                answers.update({i: (t, None) for i, t in zip(ok, texts)})
            except Exception:  # noqa: BLE001 - find the row(s) that break the batch; keep the rest
                for i in ok:
                    try:
                        answers[i] = (engine.generate([loaded[i][0]], sampling)[0], None)
                    except Exception as e:  # noqa: BLE001 - recorded in the output, run continues
                        answers[i] = (None, f"{chunk[i].where}: generation failed ({e.__class__.__name__}: {e})")
        writer.write([r.result(*answers[i]) for i, r in enumerate(chunk)])
        if progress is not None:
            progress.update(len(chunk))


def _lot_report(out: Path, dest: str, model_dir) -> None:
    """``--lot-report``: the summary a domain writes of a predictions file (``Domain.extra["lot_report"]``),
    its answers read in the classes of the model that gave them (``model_dir``'s taxonomy.json)."""
    from .. import domains
    from ..errors import UserError

    makers = [d.extra["lot_report"] for d in domains.all_domains() if d.extra.get("lot_report")]
    if not makers:
        raise UserError("--lot-report: no domain writes lot reports")
    s = makers[0](out, dest, model_dir)
    print(f"domainvlm: lot report for {len(s['lots'])} lot(s) in {dest}", file=sys.stderr)


def _same_inputs(rows, writer, out, model: str) -> None:
    """Resuming keeps the answers already in ``out``: refuse when a row there answers another question (a changed
    --question or input) or another image (the input's rows renumbered or edited; a row's id is its line in a
    CSV or JSONL), or was answered by another model, which would otherwise pass old answers off as the new
    input's (or this model's)."""
    from ..errors import UserError

    if writer.models - {model}:
        raise UserError(f"{out}: its rows were answered by {sorted(writer.models - {model})[0]}, not {model}; "
                        "pass --overwrite to start over, or choose another --output")
    for r in rows:
        old = writer.questions.get(r.id)
        if old is not None and r.question is not None and old != r.question:
            raise UserError(f"{out}: row {r.id!r} there answers {old!r}, not {r.question!r}; pass --overwrite to "
                            "start over, or choose another --output")
        img = writer.images.get(r.id)
        if isinstance(img, str) and len(r.images) == 1 and img != r.images[0]:
            raise UserError(f"{out}: row {r.id!r} there answers image {img!r}, not {r.images[0]!r}; pass "
                            "--overwrite to start over, or choose another --output")


def _question(args) -> str | None:
    """--question, else for a folder or one map file (one question for all) the model's default question
    (_args.model_question: a model with an answer head), said on stderr; CSV / JSONL rows keep their own."""
    if args.question is not None:
        return args.question
    p = Path(args.input).expanduser()
    if not p.exists() or (p.is_file() and p.suffix.lower() in (".csv", ".jsonl", ".ndjson")):
        return None
    from ._args import model_question

    q = model_question(args.model)
    if q:
        print(f"domainvlm: asking every input {q!r} (the model's default question; --question to change)",
              file=sys.stderr)
    return q


def run(args):
    from ..inference.batch_io import ResultWriter, read_inputs
    from ..models.loader import default_model_dir

    rows = read_inputs(args.input, _question(args))
    out = _output(args)
    model = str(Path(args.model or default_model_dir()).expanduser().resolve())
    writer = ResultWriter(out, overwrite=args.overwrite, retry_errors=args.retry_errors, model=model,
                          input_ids={r.id for r in rows})
    try:
        _same_inputs(rows, writer, out, model)
        todo = [r for r in rows if r.id not in writer.done]
        skipped = len(rows) - len(todo)
        if skipped:
            print(f"domainvlm: resuming {out}: {skipped} row(s) already done, {len(todo)} to go", file=sys.stderr)
        if todo:
            from tqdm import tqdm
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            engine = engine_from_args(args)
            if hasattr(engine.answer_head, "confidence"):
                engine.answer_head.confidence = True  # rows carry the head's confidence (JSONL and CSV)
            sampling = sampling_from_args(args)
            with tqdm(total=len(todo), unit="row", desc="predict", file=sys.stderr,
                      disable=args.no_progress) as bar:
                from ..inference.prefetch import default_batch_size, frozen_heap

                bs = args.batch_size or default_batch_size(engine, 8)  # a GPU batch of 1024 maps: < 1 s
                with frozen_heap():
                    predict_rows(engine, todo, writer, sampling, bs, bar)
    finally:
        writer.close()
    total = len(writer.done)
    print(f"domainvlm: {total} row(s) in {out}, {writer.errors} with errors", file=sys.stderr)
    if args.lot_report:
        _lot_report(out, args.lot_report, str(args.model or default_model_dir()))
    if writer.errors:
        print(f"domainvlm: {writer.errors} row(s) failed; see the 'error' field in {out}", file=sys.stderr)
        return 1
    return 0
