"""Run a model over labelled records and score its answers with the task's metrics.

Each record is asked its first question(s) up to the first assistant turn; that turn is the reference.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .. import domains
from ..data.record import Record
from ..errors import UserError
from ..inference.engine import Engine, Sampling


def _prompt(r: Record) -> tuple[list[dict], int]:
    k = next(i for i, m in enumerate(r.messages) if m["role"] == "assistant")
    return r.messages[:k], k


def _load_batch(records: list[Record], base_dir, size: int | None = None) -> list:
    """((messages, images), None), or (None, message) when an image cannot be read, per record."""
    from ..inference.loading import load_conversations

    return load_conversations([(_prompt(r)[0], r.images, base_dir, f"record {r.id}") for r in records], size)


def generate_answers(engine: Engine, records: list[Record], base_dir=None, batch_size: int | None = None,
                     sampling: Sampling | None = None, progress: bool = True,
                     errors: dict[int, str] | None = None) -> list[str]:
    """Answers in record order. The next batch's images are read and rendered in a worker thread while the
    current batch generates: on a GPU the host-side loading otherwise bounds the rate. A record whose image
    cannot be read gets the empty answer (scored as wrong) and its message in ``errors`` (record index ->
    message), so one bad file does not sink the whole run."""
    from ..inference.prefetch import default_batch_size, even_chunks, prefetched

    sampling = sampling or Sampling(max_new_tokens=96)
    batch_size = batch_size or default_batch_size(engine, 32)
    errors = {} if errors is None else errors
    out: list[str] = []
    bar = tqdm(total=len(records), desc="eval", unit="rec", disable=not progress, leave=False)
    load = lambda c: _load_batch(c, base_dir, engine.canvas_size)  # noqa: E731
    for chunk, loaded in prefetched(even_chunks(records, batch_size), load):
        ok = [k for k, (conv, _) in enumerate(loaded) if conv is not None]
        errors.update({len(out) + k: err for k, (_, err) in enumerate(loaded) if err is not None})
        got = dict(zip(ok, engine.generate([loaded[k][0] for k in ok], sampling))) if ok else {}
        out.extend(got.get(k, "") for k in range(len(chunk)))
        bar.update(len(chunk))
    bar.close()
    return out


def scored_tasks() -> list[str]:
    """The tasks with metrics: every registered domain with a ``score``."""
    return sorted(d.name for d in domains.all_domains() if d.score is not None)


def task_of(records: list[Record]) -> str:
    """The one task of the records (raises before any answer is generated if there is none or no metric)."""
    tasks = {r.labels.get("task") for r in records}
    known = scored_tasks()
    if len(tasks) != 1 or None in tasks:
        raise UserError(f"records must all carry one labels.task, one of {', '.join(known)} "
                        f"(found {', '.join(sorted(map(str, tasks)))})")
    task = tasks.pop()
    if task not in known:
        raise UserError(f"no metrics for labels.task {task!r} (known: {', '.join(known)})")
    return task


def score(records: list[Record], answers: list[str], model_dir=None) -> dict:
    """The metrics of the records' task (its domain's ``score``); a score that takes ``model_dir`` gets the
    evaluated model's folder (answers are parsed in that model's taxonomy.json)."""
    import inspect

    fn = domains.get(task_of(records)).score
    if model_dir is not None and "model_dir" in inspect.signature(fn).parameters:  # the hook's 3rd argument is
        return fn(records, answers, model_dir=model_dir)                           # optional for domains
    return fn(records, answers)


def _none_readable(first: str, n: int) -> UserError:
    """The error for n records none of whose images could be read: the first one's message."""
    return UserError(first + (f" (and all {n - 1} other records' images)" if n > 1 else ""))


def check_images_found(records: list[Record], base_dir=None) -> None:
    """Raise the error the run would end with when no record has all its image files on disk (a wrong data
    path or --image-root): before the model is loaded. Nothing is read, and it stops at the first record
    whose files are all there, so a good data set costs a few stat calls."""
    from ..data.images import load_image, resolve
    from ..inference.loading import _named

    def missing(ref: str) -> str | None:  # load_image's own message when the file is not there
        try:
            if resolve(ref, base_dir)[0].exists():
                return None
            load_image(ref, base_dir)  # fails at once: says 'image not found' (or why the ref is no file)
        except UserError as e:
            return str(e)
        return None

    first = None
    for r in records:
        why = next((m for m in map(missing, r.images) if m is not None), None)
        if why is None:
            return
        first = first or _named(f"record {r.id}", UserError(why))
    if first is not None:
        raise _none_readable(first, len(records))


def evaluate_records(engine: Engine, records: list[Record], base_dir=None, batch_size: int | None = None,
                     sampling: Sampling | None = None, progress: bool = True,
                     answers_out: list | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-record rows; ``answers_out``, if given, receives the answers themselves (with the
    heads' assessments)."""
    check = domains.get(task_of(records)).extra.get("check_records")  # a label problem is reported before
    if check is not None:                                                # minutes of generation, not after
        check(records, getattr(engine, "model_dir", None))
    errors: dict[int, str] = {}
    answers = generate_answers(engine, records, base_dir, batch_size, sampling, progress, errors)
    if answers_out is not None:
        answers_out.extend(answers)
    if errors and len(errors) == len(records):  # nothing readable: a wrong image root, not bad files
        raise _none_readable(errors[min(errors)], len(records))
    metrics = score(records, answers, getattr(engine, "model_dir", None))
    if errors:  # records with unreadable images: scored as wrong (empty answer), and named
        metrics["errors"] = [errors[k] for k in sorted(errors)]
    rows = [{"id": r.id, "answer": a, "reference": r.messages[_prompt(r)[1]]["content"]}
            | ({"error": errors[k]} if k in errors else {})
            | ({"assessment": a.assessment.to_json()} if getattr(a, "assessment", None) is not None else {})
            for k, (r, a) in enumerate(zip(records, answers))]
    return metrics, rows


def collapse_rate(records: list[Record], answers: list[str]) -> float:
    """Share of answers that are identical to an answer given for a *different* image set."""
    by_text: dict[str, set] = {}
    for r, a in zip(records, answers):
        by_text.setdefault(a.strip().lower(), set()).add(tuple(r.images))
    dup = sum(1 for r, a in zip(records, answers) if len(by_text[a.strip().lower()]) > 1)
    return dup / len(answers) if answers else 0.0


def most_common_answers(answers: list[str], k: int = 3) -> list[tuple[str, int]]:
    return Counter(a.strip() for a in answers).most_common(k)


def sample_records(records: list[Record], n: int | None, seed: int = 0) -> list[Record]:
    """A seeded random ``n`` of the records, in their file order (sources are often grouped by class, so a
    prefix is not representative); all of them when ``n`` is None or not smaller."""
    import random

    if n is None or n >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def data_base_dir(path: str | Path) -> Path:
    return Path(path).resolve().parent
