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


def say(facts: dict, kind: str, lang: str = "en", pattern: str | None = None, named=(), tax=None) -> str:
    """One fact in words. ``kind``: yield / failing / dies / zone / quadrant / where (``pattern``); ``named``:
    the patterns the diagnosis names (for 'where' of a pattern it does not see); ``tax``: the model's taxonomy,
    whose zh names (a fab's own classes too) the zh sentence uses (default: the 8 known patterns')."""
    zh = lang == "zh"
    n, f, y = facts["dies"], facts["failing"], facts["yield_pct"]
    if kind == "yield":
        return (f"良率为{_pct(y)}：{n}颗芯片中{n - f}颗合格、{f}颗失效。" if zh
                else f"The yield is {_pct(y)}: {n - f} of {n} dies pass, {f} fail.")
    if kind == "failing":
        return (f"共有{f}颗失效芯片（共{n}颗，失效率{_pct(100 - y)}）。" if zh
                else f"{f} dies fail ({_pct(100 - y)} of {n} dies).")
    if kind == "dies":
        return f"这片晶圆共有{n}颗芯片。" if zh else f"The wafer has {n} dies."
    if kind in ("zone", "quadrant"):
        parts, worst = (facts["zones"], facts["worst_zone"]) if kind == "zone" else \
            (facts["quadrants"], facts["worst_quadrant"])
        names = ZONE_ZH if zh and kind == "zone" else QUAD_ZH if zh else {k: k for k in parts}
        rows = ("、" if zh else ", ").join(f"{names[k]} {_pct(v['fail_pct'])}" for k, v in parts.items())
        unit = "区域" if kind == "zone" else "象限"
        return (f"失效比例最高的是{names[worst]}{'' if kind == 'zone' else unit}。各{unit}失效比例：{rows}。" if zh
                else f"The {worst} {'zone' if kind == 'zone' else 'quadrant'} has the highest failing share. "
                     f"Failing share: {rows}.")
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
