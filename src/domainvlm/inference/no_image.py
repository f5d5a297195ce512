"""Text-only questions that need the input a head model answers about (a wafer map, an image to classify).

A head model (wafer expert, classify) was trained on questions about one image only; its small language model
has never seen a question without one, so decoding it freely makes up an answer (a "diagnosis" of no map).
A head therefore answers such a question itself, as an abstention (``reason: no_image``, no labels, no
confidence) worded in the question's language, and the structured answer says so in its fields.

Which text-only questions: those that ask the head's own question (``intent``: the domain's diagnosis or
classification keywords), unless they read as a *knowledge* question ("what is an edge-ring pattern?",
"什么是边缘环？", "what causes scratches?") that does not point at an input of its own ("this", "my", "这张").
Knowledge questions, greetings and off-topic questions keep going to the model's free decoding, as they did
before: nothing on the head's side answers them better, and an "I need an image" to "what is a donut
pattern?" would refuse a question that needs no image.
"""

from __future__ import annotations

import re

from ..lang import question_lang

# points at an input of the asker's own: the question is about *that* image / map / wafer
_DEICTIC = {
    "en": re.compile(r"\b(this|these|that|those|my|our|attached|uploaded|following|here)\b", re.I),
    "zh": re.compile(r"这张|这幅|这个|这片|这些|[该此](?:晶圆|晶片|图|片|芯片|张|幅)|我的|我们的|附|上传|下面|以下"),
}
# asks what something is in general (a definition, a cause), not what an input shows
_KNOWLEDGE = {
    "en": re.compile(r"\bwhat (is|are) (a|an)\b|\bwhat causes\b|\bcauses? of\b|\bmean(s|ing)?\b|\bdefin|\bexplain|"
                     r"\bwhy\b|\bhow (do|does|can|to|is|are)\b|\btell me about\b|\bdifference\b|\bkinds? of\b|"
                     r"\btypes? of\b", re.I),
    "zh": re.compile(r"什么是|是什么意思|含义|定义|原因|为什么|如何|怎样|怎么|解释|区别|有哪些|哪几种"),
}


def text_only(messages: list[dict], images: list) -> bool:
    """A conversation without any image whose last turn is the user's (what a head could answer now)."""
    return not images and bool(messages) and messages[-1].get("role") == "user"


def needs_input(question: str, intent, knowledge=None) -> bool:
    """Does the text-only ``question`` ask for what only an input can give (``intent(question)`` true) rather
    than for knowledge? ``knowledge(question)``: a domain's own test for a general question (e.g. it names a
    class: "what is an edge-ring pattern?"), on top of the wording above."""
    q = question or ""
    if not intent(q):
        return False
    lang = question_lang(q)
    if _DEICTIC[lang].search(q):
        return True
    return not (_KNOWLEDGE[lang].search(q) or (knowledge is not None and knowledge(q)))


# "what is X?" about a named class: a definition, whatever else the question says
ABOUT_CLASS = {"en": re.compile(r"^\s*what(?:'s| is| are)\b", re.I), "zh": re.compile(r"是什么|什么是")}
# a question about an image in general words (a classify model's question, whatever its classes)
_IMAGE_INTENT = {
    "en": re.compile(r"classif|categor|\bclass(es)?\b|\blabel|diagnos|identif|recogni|\bimage|\bpicture|\bphoto|"
                     r"\bscan\b|x-?ray|radiograph|what do you see|what (is|does) (this|it)\b|what(?:'s| is) shown",
                     re.I),
    "zh": re.compile(r"分类|类别|哪一类|哪类|标签|诊断|识别|图像|图片|照片|片子|是什么"),
}


def knowledge_question(question: str) -> bool:
    """Worded as a general question ("what is a ...", "what causes ...", "什么是") that points at no input."""
    q = question or ""
    lang = question_lang(q)
    return not _DEICTIC[lang].search(q) and bool(_KNOWLEDGE[lang].search(q) or ABOUT_CLASS[lang].search(q))


def names_class(question: str, names) -> bool:
    """Does ``question`` name one of ``names`` (class names and their Chinese names, case-insensitive)?"""
    q = (question or "").lower()
    return any(n and n.lower() in q for n in names)


def image_question(question: str, names=()) -> bool:
    """A classify-style question that needs its image: asks for a class in general words, or names a class."""
    q = question or ""
    return bool(_IMAGE_INTENT[question_lang(q)].search(q)) or names_class(q, names)


def class_knowledge(question: str, names) -> bool:
    """'What is crazing?' / '什么是龟裂？': a definition of a named class, no image needed."""
    q = question or ""
    return names_class(q, names) and bool(ABOUT_CLASS[question_lang(q)].search(q))


def answers_only_lm(model) -> bool:
    """Did this model's language model learn nothing but our answers about an image? True for the compact
    models our recipes build (their config records the compact architecture: ``vision_dim``, ``hidden``, ...):
    decoding a text-only turn freely there only makes an answer up ("hello" -> a diagnosis line), so the head
    says what it can do instead. A real base (Qwen2-VL, ...) keeps its own chat for such turns."""
    dv = getattr(getattr(model, "config", None), "domainvlm", None)
    return isinstance(dv, dict) and {"vision_dim", "vision_depth", "hidden", "layers"} <= dv.keys()
