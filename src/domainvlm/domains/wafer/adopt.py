"""Labelled pictures of wafer maps that another domain read, as wafer records (eval / calibrate of a wafer model).

A yield engineer's PNG exports are often sorted into one folder per pattern (``Center/``, ``Edge-Ring/``,
``none/``) or listed in a CSV of pictures; the generic image-folder reader (the classify domain) claims both,
and its records ("Class: Center") could never match a wafer answer ("Diagnosis: Center"), so such an eval
scored 0 with every answer unparsed. Here each record's label names become a defect set of the model's
taxonomy (matched as a labels CSV's are: case, spaces, Chinese names, none words; an unknown name is one line).
"""

from __future__ import annotations

import random


def adopt_records(recs, model_dir, langs=("en",), taxonomy=None):
    """``recs`` (labelled pictures: one image and ``labels.labels`` each) as wafer records, or None when they
    are something else (the caller then says the data does not fit the model)."""
    from .instruct import wafer_record
    from .mapfiles.labels import check_names
    from .taxonomy import reading

    if not all(len(r.images) == 1 and isinstance(r.labels.get("labels"), list) for r in recs):
        return None
    tax, own, src = reading(taxonomy, model_dir)
    rng = random.Random(0)
    out = []
    for r in recs:
        defects = check_names(r.labels["labels"], f"{r.images[0]}: field 'labels'", tax, src)
        lang = r.meta.get("lang") if r.meta.get("lang") in langs else langs[0]
        out.append(wafer_record(r.images[0], defects, lang, r.id, rng, False, False, "custom" if own else "mixedwm38",
                                r.meta.get("split"), r.meta.get("source", ""), tax if own else None))
    return out
