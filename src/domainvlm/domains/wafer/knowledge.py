"""The wafer answer contract: the canonical diagnosis line, the explanation after it, and its parser (the
evaluator relies on `format_diagnosis` / `parse_diagnosis` being exact inverses). Pattern names (en/zh) and
what each looks like come from the taxonomy (taxonomy.json); what typically causes each pattern is here.

Causes follow the wafer-map literature (Wu et al. 2015, Wang et al. 2020) and common fab practice; they are
typical hypotheses for a yield engineer to check, not a root-cause verdict.
"""

from __future__ import annotations

import re

from .patterns import NORMAL, canonical_set
from .taxonomy import default

_TAX = default()
NORMAL_ZH = "正常"  # the none label's Chinese name (the taxonomy names classes; Normal is no class)
ZH_NAME = {c.name: c.zh for c in _TAX.classes} | {NORMAL: NORMAL_ZH}
LOOKS = {lang: {c.name: c.describe(lang) for c in _TAX.classes} for lang in ("en", "zh")}

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


def _zh(tax, name: str) -> str:
    return NORMAL_ZH if name == NORMAL else (tax.get(name).zh if tax is not None else ZH_NAME[name])


def zh_name(name: str, tax=None) -> str:
    """A class's Chinese name in ``tax`` (default: the 8 known patterns'); its name where it has none."""
    if tax is not None and name in tax.names:
        return tax.get(name).zh or name
    return ZH_NAME.get(name) or name


def _zh_display(tax, name: str) -> str:
    """'中心(Center)'; a class without a Chinese name shows its name alone."""
    zh = _zh(tax, name)
    return f"{zh}({name})" if zh else name


def _canonical(defects, tax) -> tuple[str, ...]:
    """Taxonomy order; a model's own taxonomy may name classes beyond the 8 known patterns."""
    return tax.canonical(defects) if tax is not None else canonical_set(defects)


def cause(name: str, lang: str) -> str | None:
    """Typical causes of a known pattern (None for a class a fab's taxonomy added)."""
    return CAUSES[lang].get(name)


def format_diagnosis(defects, lang: str = "en", tax=None) -> str:
    """The canonical first line of every wafer answer, e.g. 'Diagnosis: Center + Edge-Loc'."""
    d = _canonical(defects, tax)
    if lang == "zh":
        body = " + ".join(_zh_display(tax, p) for p in d) if d else f"{NORMAL_ZH}({NORMAL})"
        return f"{_ZH_PREFIX}{body}"
    return f"{_EN_PREFIX} {' + '.join(d) if d else NORMAL}"


def explain(defects, lang: str = "en", tax=None) -> str:
    """Short explanation of each pattern and its typical process causes (lines after the diagnosis)."""
    d = _canonical(defects, tax)
    if not d:
        # no claim about how many dies fail: WM-811K's Normal ('none') maps reach 36 % failing dies, and an
        # all-pass map has none (the yield is a map fact, asked for or in the structured answer)
        return ("无明显缺陷模式：失效芯片没有空间规律。" if lang == "zh"
                else "No systematic defect pattern: the failing dies show no spatial signature.")
    lines = []
    for p in d:
        looks = tax.get(p).describe(lang) if tax is not None else LOOKS[lang][p]
        why = cause(p, lang)
        if lang == "zh":
            lines.append(f"- {_zh(tax, p) or p}：{looks}" + (f"；常见原因：{why}。" if why else "。"))
        else:
            lines.append(f"- {p}: {looks}" + (f"; typical causes: {why}." if why else "."))
    return "\n".join(lines)


def answer(defects, lang: str = "en", explain_patterns: bool = True, tax=None) -> str:
    key = (tuple(defects), lang, bool(explain_patterns), id(tax))
    hit = _ANSWERS.get(key)  # the head writes one of a few dozen texts per map: host time per map on a GPU
    if hit is not None and hit[0] is tax:
        return hit[1]
    head = format_diagnosis(defects, lang, tax)
    text = head + ("\n" + explain(defects, lang, tax) if explain_patterns else "")
    if len(_ANSWERS) < 4096:
        _ANSWERS[key] = (tax, text)  # the taxonomy is kept with its text: its id cannot be reused meanwhile
    return text


_ANSWERS: dict[tuple, tuple] = {}


_TERM = {p.lower(): p for p in _TAX.names} | {ZH_NAME[p]: p for p in _TAX.names}
_TERM |= {NORMAL.lower(): NORMAL, ZH_NAME[NORMAL]: NORMAL, "none": NORMAL}
_DIAG_RE = re.compile(r"(?:Diagnosis\s*:|诊断\s*[:：])\s*([^\n]*)", re.IGNORECASE)


def _terms(tax) -> dict:
    if tax is None:
        return _TERM
    t = {c.name.lower(): c.name for c in tax.classes} | {c.zh: c.name for c in tax.classes if c.zh}
    return t | {NORMAL.lower(): NORMAL, ZH_NAME[NORMAL]: NORMAL, "none": NORMAL}


def parse_diagnosis(text: str, tax=None) -> tuple[str, ...] | None:
    """Defect set named in an answer's diagnosis line, or None if it cannot be parsed.

    Accepts the en and zh canonical wordings ('Center + Edge-Loc', '中心(Center) + 边缘局部(Edge-Loc)');
    ``tax``: the model's taxonomy (default: the 8 known patterns).
    """
    terms = _terms(tax)
    m = _DIAG_RE.search(text or "")
    if not m:
        return None
    found = []
    for term in m.group(1).strip().rstrip("。.").split("+"):
        term = term.strip()
        inner = re.search(r"[(（]([^)）]+)[)）]", term)  # zh form carries the English name in brackets
        key = (inner.group(1) if inner else term).strip()
        name = terms.get(key.lower()) or terms.get(key) or terms.get(re.sub(r"[(（].*", "", term).strip())
        if name is None:
            return None
        found.append(name)
    if not found:
        return None
    if NORMAL in found:
        return () if len(found) == 1 else None
    return _canonical(found, tax)


# The expert's reply to an off-topic question (trained; the answer head compares its first token with a
# diagnosis's first token to decide whether a keyword-less question asks for a diagnosis).
REFUSAL = {
    "en": "I am a wafer-map expert: I diagnose defect patterns on wafer maps and explain their likely causes. "
          "Please ask me about the wafer map.",
    "zh": "我是晶圆图专家：我可以诊断晶圆图上的缺陷模式并解释其可能原因。请向我询问这张晶圆图。",
}


def line_end(tok, ids, start: int = 0) -> int | None:
    """Index just past the first token at or after ``start`` whose text holds a newline (None if there is none):
    where the diagnosis line ends in a tokenised answer."""
    return next((j + 1 for j in range(start, len(ids)) if "\n" in tok.decode([int(ids[j])])), None)
