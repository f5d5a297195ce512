"""Labelled images -> instruction records in English and Chinese, and answers parsed back to label sets.

The answer's first line is canonical: ``Class: crazing`` / ``类别：龟裂(crazing)`` (multi-label:
``Classes: a + b``, or the none label); the class descriptions follow as fixed text. The evaluator and the
constrained head (head.py) read and write exactly this line, so any model trained on these records answers
parseably.
"""

from __future__ import annotations

import random
import re

from ...data.record import IMAGE_TOKEN, Record
from ...lang import question_lang  # noqa: F401 - re-exported (the head, recipe data)
from ...taxonomy import Taxonomy

QUESTIONS = {
    "en": [
        "What class does this image belong to?",
        "Classify this image.",
        "Which category is shown in this image?",
        "What defect or object does this image show? Name its class.",
        "Identify the class of this image and describe it.",
        "Which label fits this image best?",
    ],
    "zh": [
        "这张图像属于哪个类别？",
        "请对这张图像进行分类。",
        "这张图像显示的是哪一类？",
        "这张图像显示了什么缺陷或物体？请说出它的类别。",
        "请识别这张图像的类别并加以描述。",
        "哪个标签最符合这张图像？",
    ],
}
PREFIX = {("en", False): "Class: ", ("en", True): "Classes: ", ("zh", False): "类别：", ("zh", True): "类别："}
NONE_WORD = {"en": "none", "zh": "无"}
def class_line(labels, tax: Taxonomy, lang: str) -> str:
    """The canonical first line for a label set (in taxonomy order)."""
    labels = tax.canonical(labels)
    if labels:
        body = " + ".join(tax.get(n).display(lang) for n in labels)
    else:
        body = tax.none_label or NONE_WORD[lang]
    return PREFIX[(lang, tax.multi_label)] + body


def describe(labels, tax: Taxonomy, lang: str) -> str:
    """The fixed text after the class line: each named class's description ('name: text' when several)."""
    labels = tax.canonical(labels)
    parts = [(n, tax.get(n).describe(lang)) for n in labels]
    parts = [(n, d) for n, d in parts if d]
    if len(labels) == 1:
        return parts[0][1] if parts else ""
    sep = "：" if lang == "zh" else ": "
    return "\n".join(f"{tax.get(n).display(lang)}{sep}{d}" for n, d in parts)


def answer(labels, tax: Taxonomy, lang: str, explain: bool = True) -> str:
    line = class_line(labels, tax, lang)
    text = describe(labels, tax, lang) if explain else ""
    return f"{line}\n{text}" if text else line


def parse_answer(text: str, names=None, none_label: str | None = None) -> tuple[str, ...] | None:
    """The label set an answer's first line names, or None if it does not parse. A zh display
    ``龟裂(crazing)`` maps back to its class name; ``names`` (if given) are the only valid ones."""
    first = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    for p in ("Classes:", "Class:", "类别：", "类别:"):
        if first.startswith(p):
            body = first[len(p):].strip()
            break
    else:
        return None
    if body in (none_label, NONE_WORD["en"], NONE_WORD["zh"]) and body and not (names and body in names):
        return ()  # (a class named 'none' / '无', as inspection data often has, is that class)
    out = []
    for part in body.split(" + "):
        part = part.strip()
        m = re.fullmatch(r".*?[(（](.+)[)）]", part)
        name = m.group(1).strip() if m and (names is None or m.group(1).strip() in names) else part
        if not name or (names is not None and name not in names):
            return None
        out.append(name)
    return tuple(out)


def classify_record(ref: str, labels, tax: Taxonomy, lang: str, rid: str, rng: random.Random,
                    explain: bool = True, split: str | None = None, source: str = "") -> Record:
    q = rng.choice(QUESTIONS[lang])
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{q}"},
            {"role": "assistant", "content": answer(labels, tax, lang, explain)}]
    return Record(id=rid, images=[ref], messages=msgs,
                  labels={"task": "classify", "labels": list(tax.canonical(labels)), "taxonomy": tax.name},
                  meta={"source": source, "split": split, "lang": lang})


def build_records(items, label_sets, tax: Taxonomy, langs=("en", "zh"), seed: int = 0, explain: bool = True,
                  source: str = "") -> list[Record]:
    """One record per image, its language drawn from ``langs``."""
    rng = random.Random(seed)
    out = []
    for i, (it, labs) in enumerate(zip(items, label_sets)):
        lang = rng.choice(list(langs))
        out.append(classify_record(it.image, labs, tax, lang, f"{tax.name}-{i}", rng, explain, it.split, source))
    return out


def corpus(tax: Taxonomy) -> list[str]:
    """Every text a classify model is trained on (the compact model's tokenizer is learnt from it)."""
    texts = [q for lang in QUESTIONS for q in QUESTIONS[lang]]
    sets = [(n,) for n in tax.names] if len(tax.names) > 9 and tax.multi_label else tax.answer_sets()
    for s in sets:  # (many multi-label subsets: the single classes already hold every word)
        texts += [answer(s, tax, lang) for lang in ("en", "zh")]
    return texts
