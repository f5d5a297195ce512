"""Fact questions about one wafer map ("what is the yield?", "where is the scratch?", "良率是多少？"): which
questions they are, their answers computed from the map (facts.py, evidence.py) instead of decoded by the LM,
and instruction pairs built from each map's own numbers (for future training).

:func:`fact_question` -> (kind, pattern) or None; kinds as in :func:`.facts.say`.
:func:`answer_facts` is the head's one call: it answers the fact questions of a batch and leaves the rest.
"""

from __future__ import annotations

import functools
import re

from ...lang import question_lang
from .facts import image_facts, map_facts, say
from .instruct import QUESTIONS
from .taxonomy import default

_TAX = default()


@functools.lru_cache(maxsize=8)
def _vocab(classes: tuple[tuple[str, str], ...]) -> tuple[dict, dict]:
    """({name: regex}, {zh name: name}) of a taxonomy's classes (given as (name, zh) pairs)."""
    return ({p: re.compile(r"\b" + re.escape(p).replace(r"\-", r"[-\s]?") + r"(?:e?s)?\b", re.I)  # "scratches"
             for p, _ in classes},
            {zh: p for p, zh in classes if zh})


def _vocab_of(tax=None) -> tuple[dict, dict]:
    """The class names a question may name: the model's taxonomy (a fab's own classes too), else the 8."""
    return _vocab(tuple((c.name, c.zh) for c in (tax or _TAX).classes))


_KINDS = {  # first match wins: a 'where' question about a pattern before the general ones
    "en": [("yield", r"\byield\b"),
           ("failing", r"how many (?:\w+ )*?(?:dies|chips)? ?(?:fail|failed|failing|bad|defective)|"
                       r"(?:number|count) of (?:fail|failed|failing|bad|defective) (?:dies|chips)"),
           ("dies", r"how many (?:dies|chips)|(?:number|count) of (?:dies|chips)|die count|total dies"),
           ("zone", r"which (?:zone|region|ring|area)|centre or (?:the )?edge|center or (?:the )?edge"),
           ("quadrant", r"which quadrant")],
    "zh": [("yield", r"良率|成品率"),
           ("failing", r"(?:多少|几)(?:颗|个)?(?:芯片|晶粒)?(?:失效|不良|坏)|失效(?:芯片|晶粒)?(?:数|有多少|多少)"),
           ("dies", r"(?:多少|几)(?:颗|个)(?:芯片|晶粒)|芯片总数|晶粒总数|芯片数"),
           ("zone", r"哪个区域|哪个区|中心还是边缘"),
           ("quadrant", r"哪个象限")],
}
_WHERE = {"en": re.compile(r"\bwhere\b|\blocat|\bwhich part\b|\bposition\b", re.I),
          "zh": re.compile(r"哪里|哪儿|位置|在哪|什么地方|分布在")}
def named_pattern(q: str, tax=None) -> str | None:
    """The class ``q`` names, in ``tax`` (the model's taxonomy; default: the 8 known patterns)."""
    name_re, zh_names = _vocab_of(tax)
    for zh, name in sorted(zh_names.items(), key=lambda kv: -len(kv[0])):  # 边缘局部 before 局部
        if zh in q:
            return name
    hits = [p for p, rx in name_re.items() if rx.search(q)]
    return max(hits, key=len) if hits else None  # "Edge-Loc" rather than "Loc"


def fact_question(q: str, tax=None) -> tuple[str, str | None] | None:
    """(kind, pattern) if ``q`` asks a fact about the map, else None (a diagnosis or anything else); ``tax``:
    the classes a 'where' question may name (the model's taxonomy)."""
    q = (q or "").replace("<image>", "").strip()
    lang = question_lang(q)
    pat = named_pattern(q, tax)
    if pat is not None and _WHERE[lang].search(q):
        return "where", pat
    for kind, rx in _KINDS[lang]:
        if re.search(rx, q, re.I):
            return kind, None
    return None


def answer_facts(head, convs, todo: list[int], batch_size: int = 1024) -> tuple[dict, list[int]]:
    """Answers to the fact questions among ``todo`` (first turns about one canonical map): {index: text, Answer,
    or an Assessment the head words (assess.text)}, and the indices left for the diagnosis. A picture the input
    check turns away gets its abstention, not numbers read off it (a radiograph had a "yield"). When a
    structured answer is asked for (confidence or annotators on: ``ask --json``, the API's json_schema,
    predict's rows), the map is assessed as for the standard diagnosis question (:func:`_assessed`): the answer
    carries defects, confidence, evidence and facts as a diagnosis does, its text is the fact. 'where'
    questions get the head's own diagnosis and evidence."""
    from ...inference.assessment import Assessment
    from . import input_check
    from .evidence_head import diagnose_with_evidence

    done, rest, asked = {}, [], []
    structured = bool(getattr(head, "annotators", None) or getattr(head, "confidence", None))
    for k in todo:
        q = convs[k][0][-1]["content"]
        fq = fact_question(q, getattr(head, "tax", None))
        if fq is None:
            rest.append(k)
            continue
        kind, pat = fq
        lang, image = question_lang(q), convs[k][1][0]
        bad = input_check.check(image, all_fail_ok=True)  # an all-fail map has a yield (0 %), no dies none
        if bad is not None:
            done[k] = Assessment(labels=(), confidence=None, abstain=True, reason=bad[0], detail=bad[1], lang=lang)
            continue
        if structured:
            asked.append((k, kind, pat, lang))
            continue
        image = image.to_pil() if hasattr(image, "to_pil") else image  # a die grid not yet drawn (batch_load)
        named, evidence = (), None
        if kind == "where":
            named, evidence = diagnose_with_evidence(head, QUESTIONS[lang][0], image, lang, (pat,))  # as trained
        done[k] = say(image_facts(image, evidence), kind, lang, pat, named, getattr(head, "tax", None))
    if asked:
        done.update(_assessed(head, convs, asked, batch_size))
    return done, rest


def _assessed(head, convs, asked: list[tuple], batch_size: int) -> dict:
    """Structured fact answers: the assessment of the standard diagnosis question about each map, its facts
    filled (they are the answer, so also where annotators are off), worded as the fact. A 'where' question
    whose diagnosis abstains gets that abstention (the head words it): the pattern's place would be a withheld
    diagnosis's."""
    from ...data.record import IMAGE_TOKEN
    from ...inference.generation import Answer
    from .evidence import attributor

    firsts = [([{"role": "user", "content": f"{IMAGE_TOKEN}\n{QUESTIONS[lang][0]}"}], convs[k][1])
              for k, _, _, lang in asked]
    out = {}
    for (k, kind, pat, lang), a in zip(asked, head._assess(firsts, batch_size)):
        pic = convs[k][1][0]
        pic = pic.to_pil() if hasattr(pic, "to_pil") else pic
        if kind == "where" and not a.abstain and pat in a.labels and not any(e["pattern"] == pat for e in a.evidence):
            a.evidence = attributor(head).evidence(pic, tuple(a.labels), lang)[0]  # annotators off: it is the answer
        if not a.facts:
            a.facts = image_facts(pic, a.evidence)
        out[k] = a if a.abstain and kind == "where" else Answer.make(
            say(a.facts, kind, lang, pat, a.labels, head.tax), assessment=a, completion_tokens=None)
    return out


# ------------------------------------------------------------------------------- instruction data per map
TEMPLATES = {
    "en": {"yield": ["What is the yield of this wafer?", "What is the yield?"],
           "failing": ["How many dies failed?", "How many failing dies are on this wafer map?"],
           "dies": ["How many dies does this wafer have?"],
           "zone": ["Which zone has the most failing dies, the centre or the edge?"],
           "quadrant": ["Which quadrant has the highest failing share?"],
           "where": ["Where is the {p} on this wafer?", "Where is the {p} located?"]},
    "zh": {"yield": ["这片晶圆的良率是多少？", "良率是多少？"],
           "failing": ["有多少颗芯片失效？"],
           "dies": ["这片晶圆共有多少颗芯片？"],
           "zone": ["哪个区域的失效比例最高，中心还是边缘？"],
           "quadrant": ["哪个象限的失效比例最高？"],
           "where": ["{p}在晶圆的什么位置？", "{p}在哪里？"]},
}


def fact_pairs(grid, lang: str = "en", evidence: list[dict] | None = None, rng=None,
               tax=None) -> list[tuple[str, str]]:
    """(question, answer) pairs from this map's own numbers: one per fact kind, plus one 'where' per pattern of
    ``evidence`` (e.g. from :func:`.evidence_words.describe` of the synthetic generator's masks); ``tax``: the
    model's taxonomy, whose zh names (a fab's own classes too) the zh questions use (default: the 8 known)."""
    import random

    from .knowledge import zh_name

    rng = rng or random.Random(0)
    facts = map_facts(grid, evidence)
    out = [(rng.choice(TEMPLATES[lang][kind]), say(facts, kind, lang))
           for kind in ("yield", "failing", "dies", "zone", "quadrant")]
    for e in evidence or []:
        name = zh_name(e["pattern"], tax) if lang == "zh" else e["pattern"]
        q = rng.choice(TEMPLATES[lang]["where"]).format(p=name)
        out.append((q, say(facts, "where", lang, e["pattern"], tax=tax)))
    return out
