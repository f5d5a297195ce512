"""Wafer maps -> instruction records (image + conversation + labels), in English and Chinese.

Questions come in several phrasings per language; the answer starts with the canonical diagnosis line that
the evaluator parses back, then explains each pattern (domain.wafer_knowledge). The image is referenced as
``<file>#<index>`` so 50k maps need no PNG export.
"""

from __future__ import annotations

import random

from ...data.record import IMAGE_TOKEN, Record
from . import knowledge as wk

QUESTIONS = {
    "en": [
        "What defect pattern does this wafer map show?",
        "Diagnose this wafer map.",
        "Which failure patterns are present on this wafer?",
        "Is there a systematic defect on this wafer? If so, which one?",
        "Classify the defect pattern of this wafer bin map and explain it.",
        "Look at this wafer map: what went wrong in the process?",
    ],
    "zh": [
        "这张晶圆图显示了什么缺陷模式？",
        "请诊断这张晶圆图。",
        "这片晶圆上有哪些失效模式？",
        "这片晶圆有系统性缺陷吗？如果有，是哪一种？",
        "请对这张晶圆图的缺陷模式进行分类并解释。",
        "看一下这张晶圆图：工艺中出了什么问题？",
    ],
}
FOLLOW_UPS = {
    "en": ["What should I check first in the fab?", "What are the likely causes?"],
    "zh": ["在工厂里我应该先检查什么？", "可能的原因是什么？"],
}


def follow_up_answer(defects, lang: str, tax=None) -> str:
    """``tax``: the model's taxonomy; a class it added has no known causes, so its look is named instead."""
    if not defects:
        return ("这片晶圆没有系统性缺陷，无需针对性排查，继续常规监控即可。" if lang == "zh"
                else "Nothing specific: the wafer shows no systematic pattern, keep routine monitoring.")
    why = {p: wk.cause(p, lang) or tax.get(p).describe(lang) for p in defects} if tax is not None else None
    if lang == "zh":
        names = {p: (tax.get(p).zh or p) if tax is not None else wk.ZH_NAME[p] for p in defects}
        return "建议按以下顺序排查：" + "；".join(
            f"{names[p]}：{why[p] if why else wk.CAUSES['zh'][p]}" for p in defects) + "。"
    return "Check, in this order: " + "; ".join(f"{p}: {why[p] if why else wk.CAUSES['en'][p]}" for p in defects) + "."


def wafer_record(ref: str, defects, lang: str, rid: str, rng: random.Random, explain: bool = True,
                 follow_up: bool = False, taxonomy: str = "mixedwm38", split: str | None = None,
                 source: str = "", tax=None) -> Record:
    """``tax``: the taxonomy whose classes ``defects`` names (None: the 8 known patterns)."""
    q = rng.choice(QUESTIONS[lang])
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{q}"},
            {"role": "assistant", "content": wk.answer(defects, lang, explain, tax)}]
    if follow_up:
        msgs += [{"role": "user", "content": rng.choice(FOLLOW_UPS[lang])},
                 {"role": "assistant", "content": follow_up_answer(tuple(defects), lang, tax)}]
    return Record(id=rid, images=[ref], messages=msgs,
                  labels={"task": "wafer", "defects": list(defects), "taxonomy": taxonomy},
                  meta={"source": source, "split": split, "lang": lang})


def build_wafer_records(ws, path: str, langs=("en", "zh"), seed: int = 0, explain: bool = True,
                        follow_up_frac: float = 0.0, indices=None) -> list[Record]:
    """One record per map (language chosen at random among ``langs``), referencing ``path#index``."""
    rng = random.Random(seed)
    out = []
    for i in (range(len(ws)) if indices is None else indices):
        lang = rng.choice(list(langs))
        split = ws.split[i] if ws.split is not None else None
        out.append(wafer_record(f"{path}#{i}", ws.defects[i], lang, f"{ws.source}-{i}", rng, explain,
                                rng.random() < follow_up_frac, ws.taxonomy, split, ws.source))
    return out
