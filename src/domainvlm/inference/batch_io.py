"""Inputs and resumable outputs of batch prediction (`domainvlm predict`).

Inputs: a folder of images (one question for all), a CSV (columns ``image``, ``question``, optional ``id``) or a
JSONL (``{"id", "image", "question"}`` or a domainvlm record ``{"images", "messages"}``). Relative image paths
are resolved against the input file's folder. Problems in one row become that row's error; problems with the
file as a whole (missing column, duplicate ids) stop before any work with one line naming file/line/field.

Outputs (JSONL or CSV) carry an answer head's structured answer beside the text (JSONL: every field of
``Assessment.to_json``; CSV: ``defects`` ('; '-separated), ``confidence``, ``abstain``, ``reason`` and
``per_pattern`` (JSON), empty for a model without a head). They are appended row by row and fsynced per
batch, so an interrupted run loses at most the batch in flight; on restart rows already present are skipped
and a half-written last line is dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import IMAGE_SUFFIXES, is_junk
from ..data.record import IMAGE_TOKEN
from ..errors import UserError, json_problem, where
from ..io import atomic_open, iter_lines, read_text

IMAGE_KEYS, QUESTION_KEYS = ("image", "image_path", "path", "file"), ("question", "prompt", "text")
COLUMNS = ["id", "image", "question", "answer", "error", "reference"]
STRUCTURED = ["defects", "confidence", "abstain", "reason", "per_pattern"]  # a head's fields, as CSV columns
HEADER = COLUMNS + STRUCTURED + ["model"]  # model: the folder that answered (resuming checks it is the same)


def _csv_row(r: dict) -> dict:
    """A result row as CSV cells: labels '; '-joined, booleans true/false, mappings as JSON (cells read back
    from a CSV being resumed are text already and stay as they are)."""
    out = dict(r)
    if isinstance(out.get("defects"), list):
        out["defects"] = "; ".join(map(str, out["defects"]))
    if isinstance(out.get("abstain"), bool):
        out["abstain"] = "true" if out["abstain"] else "false"
    if isinstance(out.get("per_pattern"), dict):
        out["per_pattern"] = json.dumps(out["per_pattern"], ensure_ascii=False)
    return out


@dataclass
class Row:
    id: str
    where: str                      # "file:line" for error messages
    images: list[str] = field(default_factory=list)
    messages: list[dict] | None = None
    question: str | None = None
    reference: str | None = None
    error: str | None = None
    base_dir: Path | None = None

    def result(self, answer: str | None, error: str | None) -> dict:
        d = {"id": self.id, "image": self.images[0] if len(self.images) == 1 else (self.images or None),
             "question": self.question, "answer": None if answer is None else str(answer), "error": error}
        if self.reference is not None:
            d["reference"] = self.reference
        a = getattr(answer, "assessment", None)  # a head's structured answer: its fields on the row (JSONL)
        return d | a.to_json() if a is not None else d


def _pick(d: dict, keys) -> object:
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return None


def _simple_row(rid: str, loc: str, d: dict, question: str | None, base: Path | None) -> Row:
    row = Row(id=rid, where=loc, base_dir=base)
    img = _pick(d, IMAGE_KEYS)
    if img is None and isinstance(d.get("images"), list) and d["images"]:
        img = d["images"][0]
    if img is not None and not isinstance(img, str):
        row.error = f"{loc}: field 'image': expected a path string"
        return row
    q = _pick(d, QUESTION_KEYS) or question
    if not isinstance(q, str) or not q.strip():
        row.error = f"{loc}: field 'question': missing (or pass --question)"
        return row
    if IMAGE_TOKEN in q:  # it would be taken for a second image slot: the processor fails with a count mismatch
        row.error = f"{loc}: field 'question': may not contain the reserved token '{IMAGE_TOKEN}'"
        return row
    row.question, row.images = q, [img] if img else []
    row.messages = [{"role": "user", "content": (f"{IMAGE_TOKEN}\n{q}" if img else q)}]
    return row


def _record_row(rid: str, loc: str, d: dict, base: Path) -> Row:
    from ..data.record import Record

    msgs = d["messages"]
    ref = None
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        ref, msgs = msgs[-1].get("content"), msgs[:-1]
    try:  # validate as a record whose answer is a placeholder
        rec = Record.from_dict({**d, "id": rid, "messages": [*msgs, {"role": "assistant", "content": ""}]}, loc)
    except UserError as e:
        return Row(id=rid, where=loc, error=str(e))
    users = [m["content"] for m in msgs if m["role"] == "user"]
    return Row(id=rid, where=loc, images=rec.images, messages=msgs, reference=ref,
               question=users[-1].replace(IMAGE_TOKEN, "").strip() if users else None, base_dir=base)


def read_folder(path: Path, question: str | None) -> list[Row]:
    if not question:
        raise UserError(f"{path}: a folder input needs --question (asked about every image)")
    # what the OS, zip tools and NASes add (._x.jpg, __MACOSX/, @eaDir/, Thumbs.db, dot-files) is no input
    entries = [p for p in path.rglob("*") if not p.is_dir() and not is_junk(p.relative_to(path))]
    files = sorted(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    items = [it for it in _domain_items(path, files) if not _junk_ref(path, it[1])]
    claimed = {ref.rsplit("#", 1)[0] if "#" in ref else ref for _, ref, _ in items}
    files = [p for p in files if str(p) not in claimed]  # named like an image, read by a domain (content decides)
    if not files and not items:
        raise UserError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} and domain files)")
    used = {str(p) for p in files} | claimed
    if n := sum(str(p) not in used for p in entries):  # say so: a silent skip reads like a lost row
        import sys

        print(f"domainvlm: {path}: {n} {'entry' if n == 1 else 'entries'} skipped (neither images nor map "
              "files, or broken links)", file=sys.stderr)
    # refs keep the folder prefix as given, so base_dir is None (resolving against the folder would double it)
    return [_simple_row(p.relative_to(path).as_posix(), str(p), {"image": str(p)}, question, None) for p in files] + \
        [Row(id=i, where=ref, images=[ref], error=err) if err else _simple_row(i, ref, {"image": ref}, question, None)
         for i, ref, err in items]


def _junk_ref(folder: Path, ref: str) -> bool:
    p = Path(ref.rsplit("#", 1)[0] if "#" in ref else ref)
    try:
        return is_junk(p.relative_to(folder))
    except ValueError:  # not under the folder as written: a domain's own ref, kept
        return False


def _domain_items(folder: Path, images) -> list[tuple[str, str, str | None]]:
    """(row id, image ref, error) for the files in ``folder`` a domain reads (``Domain.extra["folder_items"]``,
    e.g. one ``FILE#K`` per wafer of a fab map file)."""
    from .. import domains

    return [item for d in domains.all_domains() if d.extra.get("folder_items")
            for item in d.extra["folder_items"](folder, images)]


def _domain_file_items(path: Path) -> list[tuple[str, str, str | None]] | None:
    """(row id, image ref, error) per image a domain reads out of the one file ``path``
    (``Domain.extra["file_items"]``, e.g. ``FILE#K`` per wafer of a multi-wafer STDF), or None: no domain's."""
    from .. import domains

    for d in domains.all_domains():
        items = d.extra["file_items"](path) if d.extra.get("file_items") else None
        if items is not None:
            return items
    return None


def read_csv(path: Path, question: str | None) -> list[Row]:
    rows = []
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if not any(k in cols for k in IMAGE_KEYS):
            raise UserError(f"{path}:1: no image column (expected one of: {', '.join(IMAGE_KEYS)}); got "
                            f"{', '.join(cols) or 'an empty file'}")
        if question is None and not any(k in cols for k in QUESTION_KEYS):
            raise UserError(f"{path}:1: no question column (expected one of: {', '.join(QUESTION_KEYS)}) "
                            "and no --question given")
        for n, d in enumerate(reader, 1):
            rid = (d.get("id") or "").strip() or str(n)
            rows.append(_simple_row(rid, f"{path}:{reader.line_num}", d, question, path.parent))
    return rows


def read_jsonl(path: Path, question: str | None) -> list[Row]:
    rows = []
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        loc = f"{path}:{n}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(Row(id=str(n), where=loc, error=f"{loc}: malformed JSON ({json_problem(e)})"))
            continue
        if not isinstance(d, dict):
            rows.append(Row(id=str(n), where=loc, error=f"{loc}: expected a JSON object"))
            continue
        rid = str(d["id"]) if d.get("id") not in (None, "") else str(n)
        rows.append(_record_row(rid, loc, d, path.parent) if "messages" in d
                    else _simple_row(rid, loc, d, question, path.parent))
    return rows


def read_inputs(path: str | Path, question: str | None = None) -> list[Row]:
    path = Path(path).expanduser()
    if not path.exists():
        base, sep, k = str(path).rpartition("#")
        if sep and k.isdigit() and Path(base).is_file():
            raise UserError(f"{path}: predict reads whole files (one row per wafer of {Path(base).name}); give "
                            f"{base}, or ask about one wafer with: domainvlm ask --image {path}")
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        rows = read_folder(path, question)
    elif path.suffix.lower() == ".csv":
        rows = read_csv(path, question)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = read_jsonl(path, question)
    elif (items := _domain_file_items(path)) is not None:  # one file of several images: a lot's map file
        if not question:
            raise UserError(f"{path}: a map-file input needs --question (asked about every wafer)")
        rows = [_simple_row(i, ref, {"image": ref}, question, None) for i, ref, _ in items]
    else:
        raise UserError(f"{path}: expected a folder of images, a .csv or a .jsonl file")
    if not rows:
        raise UserError(f"{path}: no rows to answer (empty file)")
    seen: dict[str, str] = {}
    for r in rows:  # resume keys on ids, so they must be unique
        if r.id in seen:
            raise UserError(f"{where(r.where, field='id')}: duplicate id {r.id!r} (also at {seen[r.id]})")
        seen[r.id] = r.where
    return rows


class ResultWriter:
    """Append-only JSONL/CSV result file that knows which ids it already holds."""

    def __init__(self, path: str | Path, overwrite: bool = False, retry_errors: bool = False,
                 model: str | None = None, input_ids: set | None = None):
        self.path, self.model = Path(path).expanduser(), model
        self.csv = self.path.suffix.lower() == ".csv"
        if not self.csv and self.path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise UserError(f"{self.path}: output must end in .jsonl or .csv")
        if self.path.is_dir():  # e.g. -o results.jsonl/ made by hand: reading it to resume would be a traceback
            raise UserError(f"{self.path}: is a folder; give a file name")
        kept = [] if overwrite or not self.path.exists() else self._existing(retry_errors)
        if input_ids is not None:  # an error row of an input now gone under that id (a map file that did not
            kept = [r for r in kept if not r.get("error") or r["id"] in input_ids]  # read is FILE, then FILE#K)
        self.done = {r["id"] for r in kept}
        self.questions = {r["id"]: r.get("question") for r in kept}  # resuming checks they are still the same
        self.images = {r["id"]: r.get("image") for r in kept}
        self.models = {r.get("model") for r in kept} - {None}  # files written before rows named it: none
        self.errors = sum(1 for r in kept if r.get("error"))
        with atomic_open(self.path, "w", encoding="utf-8", newline="") as fh:  # drops partial/retried rows
            if self.csv:
                w = csv.DictWriter(fh, HEADER, extrasaction="ignore")
                w.writeheader()
                w.writerows(map(_csv_row, kept))
            else:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
        self.fh = open(self.path, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self.fh, HEADER, extrasaction="ignore") if self.csv else None

    def _existing(self, retry_errors: bool) -> list[dict]:
        text = read_text(self.path)
        if text and not text.endswith("\n"):  # interrupted mid-line: that row is redone
            text = text[: text.rfind("\n") + 1]
        if self.csv:
            reader = csv.DictReader(text.splitlines(keepends=True))
            if text and (reader.fieldnames or [])[:5] != COLUMNS[:5]:
                raise UserError(f"{self.path}:1: exists but is not a predictions CSV; pass --overwrite or "
                                "choose another --output")
            rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
        else:
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    r = None
                if not isinstance(r, dict) or "id" not in r:
                    raise UserError(f"{self.path}:{n}: exists but is not a predictions file; pass --overwrite "
                                    "or choose another --output")
                rows.append(r)
        return [r for r in rows if not (retry_errors and r.get("error"))]

    def write(self, results: list[dict]) -> None:
        for r in results:
            if self.model is not None:
                r = {**r, "model": self.model}
            if self._csv:
                self._csv.writerow(_csv_row(r))
            else:
                self.fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            self.done.add(r["id"])
            self.errors += bool(r.get("error"))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()
