"""Which questions ask the wafer head for a diagnosis, and in which language (the head and assess.py read it).

Language: Chinese when the question contains CJK characters, else English. A question asks for a diagnosis
when it has a wafer/defect keyword (:func:`wants_diagnosis`).
"""

from __future__ import annotations

import re

from ...lang import question_lang  # noqa: F401 - re-exported (the head and assess.py read it here)

_INTENT = {
    "en": re.compile(r"defect|pattern|diagnos|classif|fail|wrong|wafer|\bmap\b|\bdies?\b|yield|systematic|problem|"
                     r"issue|fault|anomal|what (do you see|does (it|this) show|is (this|it|shown))", re.I),
    "zh": re.compile(r"缺陷|模式|诊断|分类|失效|晶圆|晶片|图|问题|故障|异常|良率|芯片|划痕|判断|这是什么"),
}


def wants_diagnosis(question: str) -> bool:
    return bool(_INTENT[question_lang(question)].search(question or ""))
