"""What each wafer defect pattern looks like and what typically causes it (en/zh), plus the canonical answer
wording and its parser. The evaluator relies on `format_diagnosis` / `parse_diagnosis` being exact inverses.

Causes follow the wafer-map literature (Wu et al. 2015, Wang et al. 2020) and common fab practice; they are
typical hypotheses for a yield engineer to check, not a root-cause verdict.
"""

from __future__ import annotations

import re

from .patterns import NORMAL, PATTERNS, canonical_set

ZH_NAME = {"Center": "中心", "Donut": "环形", "Edge-Loc": "边缘局部", "Edge-Ring": "边缘环",
           "Loc": "局部", "Near-full": "近满", "Scratch": "划痕", "Random": "随机", NORMAL: "正常"}

LOOKS = {
    "en": {
        "Center": "failing dies cluster in the middle of the wafer",
        "Donut": "a ring of failing dies around an intact centre",
        "Edge-Loc": "a cluster of failing dies at one part of the wafer edge",
        "Edge-Ring": "failing dies run around the whole wafer edge",
        "Loc": "a compact cluster of failing dies away from centre and edge",
        "Near-full": "almost every die on the wafer fails",
        "Scratch": "failing dies form a thin line or arc",
        "Random": "failing dies are scattered densely over the whole wafer",
    },
    "zh": {
        "Center": "失效芯片集中在晶圆中心区域",
        "Donut": "失效芯片呈环状分布，中心完好",
        "Edge-Loc": "失效芯片聚集在晶圆边缘的某一段",
        "Edge-Ring": "失效芯片沿整个晶圆边缘成环",
        "Loc": "失效芯片在中心与边缘之间局部成簇",
        "Near-full": "几乎整片晶圆的芯片都失效",
        "Scratch": "失效芯片呈细线或弧线分布",
        "Random": "失效芯片在整片晶圆上密集随机分布",
    },
}

CAUSES = {
    "en": {
        "Center": "non-uniform CMP pressure, thin-film deposition or etch non-uniformity at the centre",
        "Donut": "radial process non-uniformity, e.g. spin-coating or thermal gradients",
        "Edge-Loc": "wafer handling or clamping damage, edge bead removal issues",
        "Edge-Ring": "edge etch or deposition non-uniformity, rapid thermal anneal edge effects",
        "Loc": "local contamination or particles, a localized equipment fault",
        "Near-full": "a gross process excursion, e.g. wrong recipe or a failed step",
        "Scratch": "mechanical contact during handling or CMP",
        "Random": "particle contamination or a generally unstable clean-room environment",
    },
    "zh": {
        "Center": "中心区域CMP压力不均、薄膜沉积或刻蚀不均匀",
        "Donut": "径向工艺不均匀，如旋涂或热梯度",
        "Edge-Loc": "晶圆搬运或夹持损伤、去边工艺问题",
        "Edge-Ring": "边缘刻蚀或沉积不均匀、快速热退火边缘效应",
        "Loc": "局部污染或颗粒、局部设备故障",
        "Near-full": "严重工艺偏移，如配方错误或工序失败",
        "Scratch": "搬运或CMP过程中的机械接触",
        "Random": "颗粒污染或洁净室环境整体不稳定",
    },
}

_EN_PREFIX, _ZH_PREFIX = "Diagnosis:", "诊断："


def format_diagnosis(defects, lang: str = "en") -> str:
    """The canonical first line of every wafer answer, e.g. 'Diagnosis: Center + Edge-Loc'."""
    d = canonical_set(defects)
    if lang == "zh":
        body = " + ".join(f"{ZH_NAME[p]}({p})" for p in d) if d else f"{ZH_NAME[NORMAL]}({NORMAL})"
        return f"{_ZH_PREFIX}{body}"
    return f"{_EN_PREFIX} {' + '.join(d) if d else NORMAL}"


def explain(defects, lang: str = "en") -> str:
    """Short explanation of each pattern and its typical process causes (lines after the diagnosis)."""
    d = canonical_set(defects)
    if not d:
        return ("无明显缺陷模式，失效芯片稀疏随机，属正常良率波动。" if lang == "zh"
                else "No systematic defect pattern: the few failing dies are sparse, within normal yield loss.")
    lines = []
    for p in d:
        if lang == "zh":
            lines.append(f"- {ZH_NAME[p]}：{LOOKS['zh'][p]}；常见原因：{CAUSES['zh'][p]}。")
        else:
            lines.append(f"- {p}: {LOOKS['en'][p]}; typical causes: {CAUSES['en'][p]}.")
    return "\n".join(lines)


def answer(defects, lang: str = "en", explain_patterns: bool = True) -> str:
    head = format_diagnosis(defects, lang)
    return head + ("\n" + explain(defects, lang) if explain_patterns else "")


_TERM = {p.lower(): p for p in PATTERNS} | {ZH_NAME[p]: p for p in PATTERNS}
_TERM |= {NORMAL.lower(): NORMAL, ZH_NAME[NORMAL]: NORMAL, "none": NORMAL}
_DIAG_RE = re.compile(r"(?:Diagnosis\s*:|诊断\s*[:：])\s*([^\n]*)", re.IGNORECASE)


def parse_diagnosis(text: str) -> tuple[str, ...] | None:
    """Defect set named in an answer's diagnosis line, or None if it cannot be parsed.

    Accepts the en and zh canonical wordings ('Center + Edge-Loc', '中心(Center) + 边缘局部(Edge-Loc)').
    """
    m = _DIAG_RE.search(text or "")
    if not m:
        return None
    found = []
    for term in m.group(1).strip().rstrip("。.").split("+"):
        term = term.strip()
        inner = re.search(r"[(（]([^)）]+)[)）]", term)  # zh form carries the English name in brackets
        key = (inner.group(1) if inner else term).strip()
        name = _TERM.get(key.lower()) or _TERM.get(key) or _TERM.get(re.sub(r"[(（].*", "", term).strip())
        if name is None:
            return None
        found.append(name)
    if not found:
        return None
    if NORMAL in found:
        return () if len(found) == 1 else None
    return canonical_set(found)
