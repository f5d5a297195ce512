"""Later turns about the conversation's map, for a compact model whose LM learnt one follow-up kind only.

The recipe trains the first answer and one follow-up ("What should I check first?" -> the causes to check),
so other later turns decoded freely came out as fragments ("Check, e."), and a Chinese "这是什么？" got an
English line. Here a later turn that asks for a diagnosis or a map fact is answered as if asked first about
the same map (facts from the map, the diagnosis in the new question's language); any other gets the trained
follow-up, computed from the map's diagnosis, with a line saying what the model answers unless the question
asked what to check or why. A "where is it?" naming no pattern is asked of the pattern(s) the earlier answer
diagnosed (else the head's diagnosis of the map); it got the check list with the note before. A real base
(answers_only_lm False) keeps its own chat.
"""

from __future__ import annotations

import re

from ...data.record import IMAGE_TOKEN
from ...inference.no_image import answers_only_lm
from .instruct import QUESTIONS, follow_up_answer
from .intent import question_lang, wants_diagnosis
from .knowledge import parse_diagnosis
from .questions import answer_where, asks_where_it, fact_question

# "where does it come from?" asks for the cause, not the place
_CHECKS = {"en": re.compile(r"check|cause|why|reason|root|fix|source|come from|originat|what (should|do|can) (i|we)",
                            re.I),
           "zh": re.compile(r"检查|原因|为什么|怎么办|排查|根源|来源|从哪|来自哪")}
NOTE = {"en": "I answer what a wafer map shows: its defect pattern, its facts (yield, die counts, where a pattern "
              "lies) and what to check first. For this wafer:",
        "zh": "我回答晶圆图显示的内容：缺陷模式、图上的事实（良率、芯片数、模式的位置）以及应先检查什么。这片晶圆："}


def later_turns(head, convs) -> dict:
    """{index: answer} for the later turns among ``convs`` (messages, images) that this module answers."""
    todo = [k for k, (m, ims) in enumerate(convs)
            if ims and m and m[-1]["role"] == "user" and not head.first_turn_with_map(m, ims)]
    if not todo or not answers_only_lm(head.model):
        return {}
    qs = {k: str(convs[k][0][-1].get("content") or "").replace(IMAGE_TOKEN, "").strip() for k in todo}
    checks = {k for k in todo if _CHECKS[question_lang(qs[k])].search(qs[k])}  # "what should I check on this wafer?"
    # "where is it?" / "where is the defect?": the diagnosed pattern's place, not a second diagnosis
    where = {k for k in todo if k not in checks and asks_where_it(qs[k], head.tax)}
    todo = [k for k in todo if k not in where]
    direct = {k for k in todo if k not in checks and (wants_diagnosis(qs[k]) or fact_question(qs[k], head.tax))}
    firsts = [([{"role": "user", "content": f"{IMAGE_TOKEN}\n"
                + (qs[k] if k in direct else QUESTIONS[question_lang(qs[k])][0])}], convs[k][1][-1:]) for k in todo]
    out = _where_it(head, convs, sorted(where), qs) if where else {}
    for k, ans in zip(todo, head.answer(firsts) if todo else ()):
        a = getattr(ans, "assessment", None)
        if k in direct or a is None or a.abstain and not a.labels:  # a fact, a diagnosis, or a map turned away
            out[k] = ans
            continue
        lang = question_lang(qs[k])
        said = follow_up_answer(tuple(a.labels), lang, head.tax)
        out[k] = said if k in checks else f"{NOTE[lang]}\n{said}"
    return out


def diagnosed_before(messages: list[dict], tax=None) -> tuple | None:
    """The patterns of the latest earlier assistant answer that carries a diagnosis line (() for Normal), else
    None (none did: a fact answer, an abstention on a picture that is no map)."""
    for m in reversed(messages[:-1]):
        if m["role"] == "assistant":
            found = parse_diagnosis(str(m.get("content") or ""), tax)
            if found is not None:
                return found
    return None


def _where_it(head, convs, ks: list[int], qs: dict) -> dict:
    """'Where' answers of the later turns ``ks`` for the pattern(s) the conversation diagnosed: each one named
    gets its place (a line each); None found: the head's diagnosis of the map (answer_where)."""
    from .batch_load import head_image

    pics = {k: ([], [head_image(convs[k][1][-1], head.size)]) for k in ks}  # the map the turn is about
    return answer_where(head, pics, [(k, diagnosed_before(convs[k][0], head.tax), question_lang(qs[k])) for k in ks])
