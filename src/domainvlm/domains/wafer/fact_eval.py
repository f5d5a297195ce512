"""`eval`'s ``facts`` block: the answers the engine actually gives to fact questions, against the map file.

For the first ``limit`` records whose image is a map in a wafer file (``file.npz#N``), the engine is asked, in
the record's language, for the yield, the number of failing dies and the zone with the highest failing share.
The truth is computed from the map in the file (not from the canvas the model saw), so what this measures is the
whole path: rendering, reading the grid back, the question router and the wording. The wafer expert's head
computes these answers from the map (questions.py), so the errors are ~0 by construction: that is the point,
the numbers do not come from a 7 M-parameter LM's guess. A model without the head is measured the same way.
"""

from __future__ import annotations

import re

from .facts import map_facts

QUESTIONS = {"en": {"yield": "What is the yield of this wafer?", "failing": "How many dies failed?",
                    "zone": "Which zone has the most failing dies, the centre or the edge?"},
             "zh": {"yield": "这片晶圆的良率是多少？", "failing": "有多少颗芯片失效？",
                    "zone": "哪个区域的失效比例最高，中心还是边缘？"}}
_ZONE_WORDS = {"centre": ("centre", "center", "中心"), "middle": ("middle", "中间"), "edge": ("edge", "边缘")}
_NUM = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_INT = re.compile(r"\d+")


def _zone(text: str) -> str | None:
    """The zone named first in an answer."""
    t = (text or "").lower()
    hits = [(t.find(w), z) for z, words in _ZONE_WORDS.items() for w in words if w in t]
    return min(hits)[1] if hits else None


def _truth(ref: str, base_dir):
    from ...data.images import resolve
    from .sources import get_map

    if "#" not in ref:
        return None
    p, index = resolve(ref, base_dir)
    if p.suffix.lower() != ".npz" or index is None:
        return None
    return map_facts(get_map(str(p), index))


def fact_metrics(engine, records, base_dir=None, limit: int = 200, batch: int = 64) -> dict:
    """{n, yield_abs_error (mean, points), yield_abs_error_max, failing_exact, location_accuracy (zone)}."""
    from ...data.images import load_image

    items = []
    for r in records:
        if len(items) >= limit:
            break
        if len(r.images) == 1 and (t := _truth(r.images[0], base_dir)) is not None:
            items.append((r, t))
    if not items:
        return {"n": 0, "note": "no records with a map in a wafer file"}
    convs, keys = [], []
    for r, t in items:
        lang = (r.meta or {}).get("lang") or "en"
        img = load_image(r.images[0], base_dir, engine.canvas_size)
        for kind, q in QUESTIONS[lang].items():
            convs.append(([{"role": "user", "content": f"<image>\n{q}"}], [img]))
            keys.append((kind, t))
    answers = []
    for s in range(0, len(convs), batch):
        answers += engine.generate(convs[s:s + batch])
    err, fail_ok, zone_ok, unparsed = [], 0, 0, 0
    for (kind, t), a in zip(keys, answers):
        if kind == "yield":
            m = _NUM.search(a or "")
            if m is None:
                unparsed += 1
            err.append(abs(float(m.group(1)) - t["yield_pct"]) if m else 100.0)
        elif kind == "failing":
            m = _INT.search(a or "")
            fail_ok += bool(m) and int(m.group(0)) == t["failing"]
        else:
            zone_ok += _zone(a) == t["worst_zone"]
    n = len(items)
    return {"n": n, "yield_abs_error": round(sum(err) / n, 4), "yield_abs_error_max": round(max(err), 4),
            "failing_exact": round(fail_ok / n, 4), "location_accuracy": round(zone_ok / n, 4),
            "unparsed": unparsed,
            "questions": {lang: list(q.values()) for lang, q in QUESTIONS.items()}}
