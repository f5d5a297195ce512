"""Run a model over labelled records and score its answers with the task's metrics.

Each record is asked its first question(s) up to the first assistant turn; that turn is the reference.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..data.images import load_image
from ..data.record import Record
from ..errors import UserError
from ..inference.engine import Engine, Sampling


def _prompt(r: Record) -> tuple[list[dict], int]:
    k = next(i for i, m in enumerate(r.messages) if m["role"] == "assistant")
    return r.messages[:k], k


def generate_answers(engine: Engine, records: list[Record], base_dir=None, batch_size: int = 16,
                     sampling: Sampling | None = None, progress: bool = True) -> list[str]:
    sampling = sampling or Sampling(max_new_tokens=96)
    out: list[str] = []
    bar = tqdm(total=len(records), desc="eval", unit="rec", disable=not progress, leave=False)
    for s in range(0, len(records), batch_size):
        chunk = records[s:s + batch_size]
        convs = []
        for r in chunk:
            msgs, _ = _prompt(r)
            convs.append((msgs, [load_image(ref, base_dir) for ref in r.images]))
        out.extend(engine.generate(convs, sampling))
        bar.update(len(chunk))
    bar.close()
    return out


TASKS = ("wafer", "report")  # the tasks with metrics


def task_of(records: list[Record]) -> str:
    """The one task of the records (raises before any answer is generated if there is none or no metric)."""
    tasks = {r.labels.get("task") for r in records}
    if len(tasks) != 1 or None in tasks:
        raise UserError(f"records must all carry one labels.task, one of {', '.join(TASKS)} "
                        f"(found {', '.join(sorted(map(str, tasks)))})")
    task = tasks.pop()
    if task not in TASKS and _domain_score(task) is None:
        raise UserError(f"no metrics for labels.task {task!r} (known: {', '.join(TASKS)})")
    return task


def _domain_score(task: str):
    """[classify hook] the metrics a registered domain provides for its task (None if none does)."""
    from ..domains import all_domains

    return next((d.score for d in all_domains() if d.name == task and d.score is not None), None)


def score(records: list[Record], answers: list[str]) -> dict:
    task = task_of(records)
    if task not in TASKS:
        return _domain_score(task)(records, answers)
    if task == "wafer":
        from ..domain.wafer_knowledge import parse_diagnosis
        from .wafer_metrics import wafer_metrics

        taxonomy = records[0].labels.get("taxonomy", "mixedwm38")
        gold = [tuple(r.labels["defects"]) for r in records]
        return wafer_metrics(gold, [parse_diagnosis(a) for a in answers], taxonomy)
    from .report_eval import report_scores

    return report_scores(records, answers)


def evaluate_records(engine: Engine, records: list[Record], base_dir=None, batch_size: int = 16,
                     sampling: Sampling | None = None, progress: bool = True) -> tuple[dict, list[dict]]:
    task_of(records)  # a label problem is reported before minutes of generation, not after
    answers = generate_answers(engine, records, base_dir, batch_size, sampling, progress)
    metrics = score(records, answers)
    rows = [{"id": r.id, "answer": a, "reference": r.messages[_prompt(r)[1]]["content"]}
            for r, a in zip(records, answers)]
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


def data_base_dir(path: str | Path) -> Path:
    return Path(path).resolve().parent
