"""`domainvlm report-labels`: CheXpert-style labels (14 observations) for each report in a JSONL file."""

from __future__ import annotations

from pathlib import Path

from ....errors import UserError, where

NAME = "report-labels"
HELP = "label chest X-ray reports (JSONL of {id, report}) with the 14 CheXpert observations"


def add_arguments(p) -> None:
    p.add_argument("--input", required=True, metavar="FILE", help="JSONL, one {\"id\", \"report\"} per line")
    p.add_argument("--out", required=True, metavar="FILE", help="output JSONL of {\"id\", \"labels\"}")
    p.add_argument("--lang", choices=("en", "zh"), default=None,
                   help="report language (default: detected per report, zh when it contains CJK characters)")


def _read(path: Path) -> list[tuple[object, str]]:
    from ....data.record import iter_jsonl

    rows = []
    for n, d in iter_jsonl(path):
        if not isinstance(d, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(d).__name__}")
        if "id" not in d:
            raise UserError(f"{where(path, n, 'id')}: missing")
        if not isinstance(d["id"], (str, int)) or isinstance(d["id"], bool):
            raise UserError(f"{where(path, n, 'id')}: must be a string or integer")
        if "report" not in d:
            raise UserError(f"{where(path, n, 'report')}: missing")
        if not isinstance(d["report"], str):
            raise UserError(f"{where(path, n, 'report')}: must be a string, got {type(d['report']).__name__}")
        rows.append((d["id"], d["report"]))
    return rows


def run(args) -> int:
    from ....io import write_jsonl
    from ..chexpert_labeler import label_report

    rows = _read(Path(args.input))  # validate everything before writing anything
    n = write_jsonl(args.out, ({"id": i, "labels": label_report(t, args.lang)} for i, t in rows))
    print(f"{args.out}: {n:,} report(s) labelled")
    return 0
