"""Records read for one model (eval, calibrate): in the task of the domain whose answer head the model has.

A source is read by the domain that claims it (data/sources.py): a folder of pictures in class folders is a
labelled image collection. When the model answers in another domain (a wafer expert given class folders of
wafer-map PNGs), that domain may adopt the records (``Domain.extra["adopt_records"]``); when it cannot, the
mismatch is one line, not an evaluation where every answer is unparsed.
"""

from __future__ import annotations

from .. import domains
from ..errors import UserError
from ..models.loader import answer_head_name


def records_for_model(recs: list, model_dir, source, langs=("en",), taxonomy=None) -> list:
    head = answer_head_name(model_dir)
    dom = next((d for d in domains.all_domains() if head and head in d.answer_heads), None)
    tasks = {r.labels.get("task") for r in recs}
    known = {d.name for d in domains.all_domains()}
    if dom is None or len(tasks) != 1 or tasks == {dom.name} or not tasks <= known:
        return recs  # no head (free decoding: any task), already the model's, or for the task check to refuse
    adopt = dom.extra.get("adopt_records")
    got = adopt(recs, model_dir, langs, taxonomy) if adopt is not None else None
    if got is None:
        raise UserError(f"{source}: {next(iter(tasks))!r} records, but {model_dir} answers {dom.name!r} questions "
                        f"(its answer head {head!r}); give data of that kind, or the model trained on this data")
    return got
