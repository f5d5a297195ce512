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
from .dies import QUADRANTS
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


# ------------------------------------------------------------------------------- the fact-question router
# A question is read for its parts, not matched whole by one regex per kind (first match won: "How many dies
# passed?" got the total, "did not fail" the failing count, "what defect causes the yield loss?" the yield):
# whether it asks for a pattern or cause (the diagnosis), which dies (polarity: fail / pass words, a negation
# flips them), a count or a rate, the zone / quadrant it is scoped to, or which part fails most.
_FAIL = {"en": r"yield[-\s]loss|fail(?:s|ed|ing|ures?)?|bad|defective|faulty|reject(?:s|ed)?|dead|broken|"
               r"scrap(?:s|ped)?|non[-\s]?functional",
         "zh": r"不合格|不良|失效|坏|故障|报废|损坏|缺陷(?=的?(?:芯片|晶粒|品))"}
_PASS = {"en": r"pass(?:es|ed|ing)?|good|yield(?:s|ed|ing)?|working|functional|healthy|in[-\s]spec",
         "zh": r"合格|良品|良好|完好|通过|正常|好的|好(?=芯片|晶粒)"}
_NEG = {"en": r"(?:\b(?:not|never|no|without)\s+|n't\s+|\bnon-?)(?:\w+\s+)?",  # "did not yet fail", "non-failing"
        "zh": r"(?:没有|没|未|无|非|不(?!良|合格))(?:能|曾|会|被)?"}  # 不良 / 不合格 are fail words themselves
_POLARITY = {lang: re.compile(rf"(?P<neg>{_NEG[lang]})?{b}(?:(?P<fail>{_FAIL[lang]})|(?P<pass>{_PASS[lang]})){b}",
                              re.I) for lang, b in (("en", r"\b"), ("zh", ""))}

# Zone / quadrant words; not where they name a pattern ("centre pattern", "edge ring", 边缘局部).
_NOT_PATTERN = {"en": r"(?![-\s]*(?:patterns?|defects?|clusters?|types?|class(?:es)?|signatures?)\b)",
                "zh": r"(?!模式|缺陷|图案|型|类|簇)"}
_PARTS = {
    "en": {"centre": r"\b(?:cent(?:er|re)|central|inner(?:most)?|core)\b|\bmiddle of the (?:wafer|map)\b",
           "middle": r"\b(?:middle|mid(?:[-\s]?radius)?)\b(?!\s+of\s+the\s+(?:wafer|map))",
           "edge": r"\b(?:edge|rim|periphery|peripheral|perimeter|outer(?:most)?|border)\b(?![-\s]*(?:rings?|locs?)\b)"
                   r"|\bouter(?:most)?[-\s]ring\b",
           "top-right": r"\b(?:top|upper)[-\s]?right\b", "top-left": r"\b(?:top|upper)[-\s]?left\b",
           "bottom-left": r"\b(?:bottom|lower)[-\s]?left\b", "bottom-right": r"\b(?:bottom|lower)[-\s]?right\b"},
    "zh": {"centre": r"中心|中央|内圈", "middle": r"中间|中部", "edge": r"边缘(?!环|局部)|外圈|外围|周边",
           "top-right": r"右上", "top-left": r"左上", "bottom-left": r"左下", "bottom-right": r"右下"},
}
_PART_RX = {lang: {k: re.compile(f"(?:{v}){_NOT_PATTERN[lang]}", re.I) for k, v in d.items()}
            for lang, d in _PARTS.items()}

_WHICH_PART = {"en": r"\b(?:which|what)\s+(?:\w+\s+)?(?:zones?|regions?|rings?|areas?|parts?|sides?|quadrants?|"
                     r"bands?)\b",
               "zh": r"哪(?:个|一个|一|些)?(?:区域|区|环|圈|部分|象限|侧|边|方向)"}
_RX = {lang: {k: re.compile(v, re.I) for k, v in d.items()} for lang, d in {
    "en": {
        # asks for a pattern or a cause: the diagnosis answers it, whatever numbers it mentions ("which defect
        # limits the yield?")
        "diagnosis": r"\b(?:what|which)\s+(?:\S+\s+){0,3}?(?:defects?|patterns?|failure\s+(?:modes?|types?)|"
                     r"signatures?|mechanisms?|issues?|problems?|causes?|types?|kinds?|class(?:es)?)\b|"
                     r"\bpatterns?\b|\bwhy\b|\bcaus|\breasons?\b|\broot\b|\blimit(?:s|ed|ing)?\b|\bbecause\b|"
                     r"\bdriv(?:e|es|ing|ers?)\b|\bresponsible\b|\bbehind\b|\bexplain|\bkill|\bdetractors?\b|"
                     r"\bdiagnos|\bclassif",
        "rank": _WHICH_PART["en"] + r"|\b(?:cent(?:er|re)|middle|edge|inner|outer)\s+or\s+(?:the\s+)?"
                r"(?:cent(?:er|re)|middle|edge|inner|outer)\b|\b(?:most|highest|worst|largest)\b.*\b(?:zones?|"
                r"regions?|quadrants?|areas?)\b|\b(?:zones?|regions?|quadrants?|areas?)\b.*\b(?:most|highest|"
                r"worst|largest)\b|\bwhere\b.*\b(?:most|majority|bulk|concentrat)",
        "which_part": _WHICH_PART["en"] + r"|\bin (?:what|which)\b",
        "quadrant": r"quadrant|\b(?:top|upper|bottom|lower)[-\s]?(?:left|right)\b",
        "rate": r"\b(?:rate|ratio|percent(?:age)?|share|fraction|proportion|portion)s?\b|%|\bhow much of\b",
        "count": r"\bhow many\b|\bnumber of\b|\bcount\b|\btotal (?:number|dies|chips)\b",
        "yield": r"\byield\b"},
    "zh": {
        "diagnosis": r"原因|为什么|为何|导致|造成|引起|限制|机理|根源|诊断|分类|模式|类型|"
                     r"(?:什么|哪种|哪类|哪个|哪些|何种)(?:缺陷|问题|图案)",
        "rank": _WHICH_PART["zh"] + r"|(?:中心|中间|边缘)(?:区域?)?还是(?:中心|中间|边缘)|"
                r"(?:区域|象限)[^，,。？?]*最(?:高|多|严重|差|大)|最(?:高|多|严重|差|大)的?(?:区域|象限|区)|"
                r"哪里最(?:多|严重|集中)|集中在哪",
        "which_part": _WHICH_PART["zh"],
        "quadrant": r"象限|右上|左上|左下|右下",
        "rate": r"率|比例|百分比|占比|比率|百分之|几成",
        "count": r"多少|几(?:颗|个|片)|数量|数目|个数|总数|(?:芯片|晶粒|失效|不良|合格|良品)数",
        "yield": r"(?<!不)良率|成品率|良品率|合格率"},
}.items()}
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


def polarity(q: str, lang: str) -> str | None:
    """"fail" / "pass": the dies a count or rate is about (the first such word, negated or not), else None."""
    m = _POLARITY[lang].search(q)
    if m is None:
        return None
    return ("pass" if m["fail"] else "fail") if m["neg"] else ("fail" if m["fail"] else "pass")


def parts_named(q: str, lang: str) -> list[str]:
    """The zones / quadrants ``q`` names, in the order named."""
    hits = sorted((m.start(), p) for p, rx in _PART_RX[lang].items() if (m := rx.search(q)))
    return list(dict.fromkeys(p for _, p in hits))


def fact_question(q: str, tax=None) -> tuple[str, str | None] | None:
    """(kind, target) if ``q`` asks a fact about the map, else None (a diagnosis or anything else). Kinds as in
    :func:`.facts.say`; target: the pattern of 'where', the zone / quadrant a count or rate is asked of (None:
    the whole wafer). ``tax``: the classes a 'where' question may name (the model's taxonomy)."""
    q = (q or "").replace("<image>", "").strip()
    lang = question_lang(q)
    rx = _RX[lang]
    pat = named_pattern(q, tax)
    # a zone word is no pattern name ("failed in the center", 中心还是边缘), unless it says so ("centre pattern")
    masked = q
    for p_rx in _PART_RX[lang].values():
        masked = p_rx.sub(" ", masked)
    strict, rank = named_pattern(masked, tax), rx["rank"].search(q)
    if pat is not None and _WHERE[lang].search(q) and (strict or not rank):  # "where is the center?" as before
        return "where", strict or pat
    if strict is not None and rx["which_part"].search(q):  # "which zone is the scratch in?"
        return "where", strict
    if rx["diagnosis"].search(q):
        return None
    if rank:
        return ("quadrant" if rx["quadrant"].search(q) else "zone"), None
    parts, pol = parts_named(q, lang), polarity(q, lang)
    rate, count = rx["rate"].search(q), rx["count"].search(q)
    if len(parts) > 1 and (rate or count or pol):  # "... in the centre and at the edge?": the table of parts
        return ("quadrant" if all(p in QUADRANTS for p in parts) else "zone"), None
    part = parts[0] if parts else None
    if rate:
        if pol == "fail" or (pol is None and part and not rx["yield"].search(q)):  # "what share of the edge fails?"
            return "fail_rate", part
        return ("yield", part) if pol == "pass" or rx["yield"].search(q) else None
    if count:
        return {"pass": "passing", "fail": "failing", None: "dies"}[pol], part
    if rx["yield"].search(q):
        return "yield", part
    return None


def answer_facts(head, convs, todo: list[int], batch_size: int = 1024) -> tuple[dict, list[int]]:
    """Answers to the fact questions among ``todo`` (first turns about one canonical map): {index: text, Answer,
    or an Assessment the head words (assess.text)}, and the indices left for the diagnosis. A picture the input
    check turns away gets its abstention, not numbers read off it (a radiograph had a "yield"). When a
    structured answer is asked for (confidence or annotators on: ``ask --json``, the API's json_schema,
    predict's rows), the map is assessed as for the standard diagnosis question (:func:`_assessed`): the answer
    carries defects, confidence, evidence and facts as a diagnosis does, its text is the fact. 'where'
    questions are always assessed so (structured or not): the text of one whose diagnosis abstains is that
    abstention, as ``ask --json``'s is (the text path once located a pattern of a withheld diagnosis)."""
    from ...inference.assessment import Assessment
    from . import input_check

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
        if structured or kind == "where":
            asked.append((k, kind, pat, lang))
            continue
        image = image.to_pil() if hasattr(image, "to_pil") else image  # a die grid not yet drawn (batch_load)
        done[k] = say(image_facts(image), kind, lang, pat, (), getattr(head, "tax", None))
    if asked:
        done.update(_assessed(head, convs, asked, batch_size))
    return done, rest


def asks_where_it(q: str, tax=None) -> bool:
    """``q`` asks where something is without naming a pattern or a fact ("Where is it?", "它在哪里？"): in a
    later turn, "it" is the pattern the conversation already diagnosed (follow_up.py)."""
    q = (q or "").replace("<image>", "").strip()
    return bool(_WHERE[question_lang(q)].search(q)) and named_pattern(q, tax) is None \
        and fact_question(q, tax) is None


def answer_where(head, convs, asks: list[tuple], batch_size: int = 1024) -> dict:
    """{index: answer} of 'where' questions about patterns given, not named in the question (a later turn's
    "where is it?"): ``asks`` (index, patterns, lang); patterns: a tuple (() for Normal: nothing to locate),
    or None for the diagnosis's own. ``convs``: images already the head's (head_image). Assessed and
    worded as a first 'where' question is (an abstaining diagnosis: that abstention)."""
    return _assessed(head, convs, [(k, "where", pats, lang) for k, pats, lang in asks], batch_size)


_NOTHING_TO_LOCATE = {"en": "There is no defect pattern to locate on this map (diagnosis: Normal).",
                      "zh": "这张图上没有可定位的缺陷模式（诊断：正常）。"}


def _where_pats(pats, labels) -> tuple:
    """The patterns a 'where' target stands for: one, several, or (None) the diagnosis's own."""
    return (pats,) if isinstance(pats, str) else tuple(labels if pats is None else pats)


def _where_text(facts: dict, lang: str, pats, labels: tuple, tax) -> str:
    """Where each pattern of the target lies, one line each (a line names its pattern)."""
    pats = _where_pats(pats, labels)
    if not pats:
        return _NOTHING_TO_LOCATE["zh" if lang == "zh" else "en"]
    return "\n".join(say(facts, "where", lang, p, labels, tax) for p in pats)


def _assessed(head, convs, asked: list[tuple], batch_size: int) -> dict:
    """Fact answers on an assessment: that of the standard diagnosis question about each map, its facts
    filled (they are the answer, so also where annotators are off), worded as the fact. A 'where' question
    whose diagnosis abstains gets that abstention (the head words it): the pattern's place would be a withheld
    diagnosis's. A 'where' target may be a pattern, a tuple of them or None (answer_where)."""
    from ...data.record import IMAGE_TOKEN
    from ...inference.generation import Answer
    from .evidence import attributor

    firsts = [([{"role": "user", "content": f"{IMAGE_TOKEN}\n{QUESTIONS[lang][0]}"}], convs[k][1])
              for k, _, _, lang in asked]
    out = {}
    for (k, kind, pat, lang), a in zip(asked, head._assess(firsts, batch_size)):
        pic = convs[k][1][0]
        pic = pic.to_pil() if hasattr(pic, "to_pil") else pic
        want = _where_pats(pat, a.labels) if kind == "where" else ()
        seen = {e["pattern"] for e in a.evidence}
        if not a.abstain and any(p in a.labels and p not in seen for p in want):
            a.evidence = attributor(head).evidence(pic, tuple(a.labels), lang)[0]  # annotators off: it is the answer
        if not a.facts:
            a.facts = image_facts(pic, a.evidence)
        if kind == "where":
            out[k] = a if a.abstain else Answer.make(_where_text(a.facts, lang, pat, tuple(a.labels), head.tax),
                                                     assessment=a, completion_tokens=None)
            continue
        out[k] = Answer.make(say(a.facts, kind, lang, pat, a.labels, head.tax), assessment=a, completion_tokens=None)
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
