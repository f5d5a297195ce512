"""Map facts: numbers computed from the die grid itself (die count, failing dies, yield, failing share by zone
and quadrant) and where each named pattern lies (from the evidence), with their wording in en and zh.

These are computed, not generated: the 7 M-parameter LM never learnt to count dies, so fact questions are
answered from the map (questions.py routes them) and the structured answer carries the same numbers.
"""

from __future__ import annotations

import numpy as np

from .dies import QUADRANTS, ZONES, geometry, read_dies

ZONE_ZH = {"centre": "中心区", "middle": "中间区", "edge": "边缘区"}
QUAD_ZH = {"top-right": "右上", "top-left": "左上", "bottom-left": "左下", "bottom-right": "右下"}


def _part(mask: np.ndarray, fail: np.ndarray, total_fail: int) -> dict:
    n, f = int(mask.sum()), int((mask & fail).sum())
    return {"dies": n, "failing": f, "fail_pct": round(100 * f / n, 2) if n else 0.0,
            "share_of_failing_pct": round(100 * f / total_fail, 2) if total_fail else 0.0}


def map_facts(grid: np.ndarray, evidence: list[dict] | None = None, shape=None) -> dict:
    """Facts of a die grid (0 off-wafer / 1 pass / 2 fail); ``evidence``: the head's per-pattern evidence;
    ``shape``: the grid reported (the map's, that evidence die coordinates index; default: ``grid``'s)."""
    wafer, fail = grid > 0, grid == 2
    n, f = int(wafer.sum()), int(fail.sum())
    geo = geometry(grid)
    zones = {z: _part(wafer & (geo["zone"] == i), fail, f) for i, z in enumerate(ZONES)}
    quads = {q: _part(wafer & (geo["quadrant"] == i), fail, f) for i, q in enumerate(QUADRANTS)}
    out = {"dies": n, "failing": f, "passing": n - f, "yield_pct": round(100 * (n - f) / n, 2) if n else 0.0,
           "grid": list(shape or grid.shape), "zones": zones, "quadrants": quads,
           "worst_zone": max(ZONES, key=lambda z: zones[z]["fail_pct"]) if n else None,
           "worst_quadrant": max(QUADRANTS, key=lambda q: quads[q]["fail_pct"]) if n else None}
    out["patterns"] = {e["pattern"]: {k: e.get(k) for k in ("clock", "radius_band", "extent", "text")}
                       for e in (evidence or [])}
    return out


def image_facts(image, evidence: list[dict] | None = None) -> dict:
    dies = read_dies(image)
    return map_facts(dies.grid, evidence, dies.frame_shape)


def annotate(assessment, image, lang: str = "en") -> None:
    """The head's annotator hook (run after the evidence one): fills ``assessment.facts`` (not for an input
    that is no wafer map: its 'dies' would be nearest palette colours of a photo)."""
    if getattr(assessment, "reason", None) == "out_of_domain":
        return
    assessment.facts = image_facts(image, assessment.evidence)


# ------------------------------------------------------------------------------------------------- wording
def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _scope(facts: dict, part: str | None, zh: bool) -> tuple[int, int, str | None]:
    """(dies, failing, its name in words) of ``part`` (a zone or quadrant); the whole wafer (name None) for no
    part, or one these facts do not break down."""
    for key, names in (("zones", ZONE_ZH), ("quadrants", QUAD_ZH)):
        p = (facts.get(key) or {}).get(part) if part else None
        if p is not None:
            unit = "zone" if key == "zones" else "quadrant"
            return p["dies"], p["failing"], (names[part] + ("" if key == "zones" else "象限") if zh
                                             else f"the {part} {unit}")
    return facts["dies"], facts["failing"], None


def _count(facts: dict, kind: str, zh: bool, part: str | None) -> str:
    """A count or rate (yield / fail_rate / passing / failing / dies) of the wafer, or of one zone / quadrant."""
    n, f, where = _scope(facts, part, zh)
    p, F = n - f, facts["failing"]
    y = facts["yield_pct"] if where is None else (round(100 * p / n, 2) if n else 0.0)
    r = 100 - y
    if where is None:
        if kind == "yield":
            return (f"良率为{_pct(y)}：{n}颗芯片中{p}颗合格、{f}颗失效。" if zh
                    else f"The yield is {_pct(y)}: {p} of {n} dies pass, {f} fail.")
        if kind == "fail_rate":
            return (f"失效率为{_pct(r)}：{n}颗芯片中{f}颗失效。" if zh
                    else f"The failure rate is {_pct(r)}: {f} of {n} dies fail.")
        if kind == "failing":
            return (f"共有{f}颗失效芯片（共{n}颗，失效率{_pct(r)}）。" if zh
                    else f"{f} dies fail ({_pct(r)} of {n} dies).")
        if kind == "passing":
            return (f"共有{p}颗合格芯片（共{n}颗，良率{_pct(y)}；{f}颗失效）。" if zh
                    else f"{p} dies pass ({_pct(y)} of {n} dies; {f} fail).")
        return f"这片晶圆共有{n}颗芯片。" if zh else f"The wafer has {n} dies."
    # a part: its failing dies as a share of the wafer's too ("what share of the failing dies is at the edge?")
    sh = _pct(100 * f / F) if F else ""
    share = (f"占全片{F}颗失效芯片的{sh}" if zh else f"{sh} of the wafer's {F} failing dies") if F else ""
    if kind == "yield":
        return (f"{where}良率为{_pct(y)}：{n}颗芯片中{p}颗合格、{f}颗失效。" if zh
                else f"The yield in {where} is {_pct(y)}: {p} of {n} dies pass, {f} fail.")
    if kind == "fail_rate":
        tail = (f"（{share}）" if zh else f" ({share})") if F else ""
        return (f"{where}失效率为{_pct(r)}：{n}颗芯片中{f}颗失效{tail}。" if zh
                else f"The failure rate in {where} is {_pct(r)}: {f} of {n} dies fail{tail}.")
    if kind == "failing":
        tail = (f"；{share}" if zh else f"; {share}") if F else ""
        return (f"{where}共有{f}颗失效芯片（共{n}颗，失效率{_pct(r)}{tail}）。" if zh
                else f"{f} dies fail in {where} ({_pct(r)} of its {n} dies{tail}).")
    if kind == "passing":
        return (f"{where}共有{p}颗合格芯片（共{n}颗，良率{_pct(y)}）。" if zh
                else f"{p} dies pass in {where} ({_pct(y)} of its {n} dies).")
    return f"{where}共有{n}颗芯片（{f}颗失效）。" if zh else f"{where[0].upper()}{where[1:]} has {n} dies ({f} failing)."


def _and(names: list[str], zh: bool) -> str:
    return "、".join(names[:-1]) + "和" + names[-1] if zh else ", ".join(names[:-1]) + " and " + names[-1]


def _worst(facts: dict, kind: str, zh: bool) -> str:
    """Which zone / quadrant fails most, and each one's failing share. Parts level within the shown rounding
    are named together (a centred pattern gave four quadrants at 4.1 % and one of them was called highest)."""
    parts, worst = (facts["zones"], facts["worst_zone"]) if kind == "zone" else \
        (facts["quadrants"], facts["worst_quadrant"])
    names = ZONE_ZH if zh and kind == "zone" else QUAD_ZH if zh else {k: k for k in parts}
    sep, unit = ("、" if zh else ", "), ("区域" if kind == "zone" else "象限")
    rows = sep.join(f"{names[k]} {_pct(v['fail_pct'])}" for k, v in parts.items())
    shown = {k: _pct(v["fail_pct"]) for k, v in parts.items()}
    top = max(parts.values(), key=lambda v: v["fail_pct"])["fail_pct"] if parts else 0.0
    tied = sorted((k for k in parts if shown[k] == _pct(top)), key=lambda k: k != worst)  # the worst one first
    suffix = "" if kind == "zone" else unit
    en_unit = "zone" if kind == "zone" else "quadrant"
    if top == 0:
        head = f"各{unit}均没有失效芯片。" if zh else f"No {en_unit} has failing dies."
    elif len(tied) == len(parts):
        head = (f"各{unit}失效比例持平（均为{_pct(top)}）。" if zh
                else f"All {_NUM.get(len(parts), len(parts))} {en_unit}s are level at {_pct(top)} failing.")
    elif len(tied) > 1:
        head = (f"失效比例最高的是{_and([names[k] for k in tied], True)}{suffix}（并列，均为{_pct(top)}）。" if zh
                else f"The {_and(tied, False)} {en_unit}s are level with the highest failing share "
                     f"({_pct(top)} each).")
    else:
        head = (f"失效比例最高的是{names[worst]}{suffix}。" if zh
                else f"The {worst} {en_unit} has the highest failing share.")
    return f"{head}各{unit}失效比例：{rows}。" if zh else f"{head} Failing share: {rows}."


_NUM = {2: "two", 3: "three", 4: "four"}
COUNT_KINDS = ("yield", "fail_rate", "passing", "failing", "dies")  # may be asked of one zone / quadrant


def say(facts: dict, kind: str, lang: str = "en", pattern: str | None = None, named=(), tax=None) -> str:
    """One fact in words. ``kind``: one of COUNT_KINDS, zone / quadrant (which fails most), where; ``pattern``:
    the pattern of 'where', or the zone / quadrant a count or rate is asked of (None: the whole wafer), as
    questions.fact_question gives them; ``named``: the patterns the diagnosis names (for 'where' of a pattern
    it does not see); ``tax``: the model's taxonomy, whose zh names (a fab's own classes too) the zh sentence
    uses (default: the 8 known patterns')."""
    zh = lang == "zh"
    if kind in COUNT_KINDS:
        return _count(facts, kind, zh, pattern)
    if kind in ("zone", "quadrant"):
        return _worst(facts, kind, zh)
    if kind == "where":
        info = facts.get("patterns", {}).get(pattern)
        if info is not None:
            return info["text"]["zh" if zh else "en"]
        if zh:
            from .knowledge import format_diagnosis, zh_name

            diag = format_diagnosis(named, "zh", tax).removeprefix("诊断：") if named else "正常"
            return f"这张图上没有看到{zh_name(pattern, tax)}（诊断：{diag}）。"
        return f"No {pattern} is seen on this map (diagnosis: {' + '.join(named) if named else 'Normal'})."
    raise ValueError(f"unknown fact kind {kind!r}")
