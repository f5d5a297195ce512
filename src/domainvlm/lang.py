"""The language of a question: Chinese when it holds a CJK character, else English (the answer heads, their
instruction data and the text-only replies all decide it this one way)."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def question_lang(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"
