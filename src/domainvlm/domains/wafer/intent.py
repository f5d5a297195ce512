"""Which questions ask the wafer head for a diagnosis, and in which language (the head and assess.py read it).

Language: Chinese when the question contains CJK characters, else English. A question asks for a diagnosis
when it has a wafer/defect keyword (:func:`wants_diagnosis`).
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_INTENT = {
    "en": re.compile(r"defect|pattern|diagnos|classif|fail|wrong|wafer|\bmap\b|\bdies?\b|yield|systematic|problem|"
                     r"issue|fault|anomal|what (do you see|does (it|this) show|is (this|it|shown))", re.I),
    "zh": re.compile(r"缺陷|模式|诊断|分类|失效|晶圆|晶片|图|问题|故障|异常|良率|芯片|划痕|判断"),
}


def question_lang(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"


def wants_diagnosis(question: str) -> bool:
    return bool(_INTENT[question_lang(question)].search(question or ""))
