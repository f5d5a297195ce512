"""Prompt phrasings for the chest X-ray report recipe, English and Chinese.

* report prompts: ask for the findings and impression (the first phrasing of each language is the one the
  raw-source loaders use, so a model trained on built data is asked the same way by ``domainvlm eval``);
* "is there X?" questions for each CheXpert observation except "No Finding";
* answers worded from the labeler's value (1 yes, 0 no, -1 uncertain, None not mentioned) plus the report
  clause that decided it, so each answer stays consistent with the report the model wrote in turn one.
"""

from __future__ import annotations

import re

# The phrasing the raw-source loaders (sources.py) put in every record, first in REPORT_PROMPTS below.
LOADER_PROMPTS = {
    "en": "Describe the findings and impression of this chest X-ray.",
    "zh": "通过这张胸部X光影像可以诊断出什么？",  # XrayQwen2VL's prompt
}

REPORT_PROMPTS = {
    "en": [
        LOADER_PROMPTS["en"],
        "Write the findings and impression for this chest radiograph.",
        "Write a radiology report (findings and impression) for this chest X-ray study.",
        "You are a radiologist. Report the findings and give your impression of this chest X-ray.",
        "Please read this chest film and write the findings and impression.",
    ],
    "zh": [
        LOADER_PROMPTS["zh"],
        "请写出这张胸部X光片的检查所见和诊断印象。",
        "请为这张胸片写一份放射学报告（所见和印象）。",
        "作为放射科医生，请描述这张胸部X光片的表现并给出印象。",
        "请阅读这张胸片，写出影像所见和结论。",
    ],
}

IMPRESSION_PROMPTS = {
    "en": ["What is the impression?", "Summarize your impression in one line.", "What is the overall impression?"],
    "zh": ["诊断印象是什么？", "请用一句话总结印象。", "总体印象是什么？"],
}

# observation -> (en noun phrase with article, en bare noun, zh term)
TERMS: dict[str, tuple[str, str, str]] = {
    "Enlarged Cardiomediastinum": ("an enlarged cardiomediastinum", "cardiomediastinal enlargement", "纵隔增宽"),
    "Cardiomegaly": ("cardiomegaly", "cardiomegaly", "心脏增大"),
    "Lung Lesion": ("a lung lesion (mass or nodule)", "a lung mass or nodule", "肺部结节或肿块"),
    "Lung Opacity": ("a lung opacity", "lung opacity", "肺部阴影"),
    "Edema": ("pulmonary edema", "pulmonary edema", "肺水肿"),
    "Consolidation": ("consolidation", "consolidation", "肺实变"),
    "Pneumonia": ("pneumonia", "pneumonia", "肺炎"),
    "Atelectasis": ("atelectasis", "atelectasis", "肺不张"),
    "Pneumothorax": ("a pneumothorax", "pneumothorax", "气胸"),
    "Pleural Effusion": ("a pleural effusion", "pleural effusion", "胸腔积液"),
    "Pleural Other": ("another pleural abnormality (thickening or plaques)", "pleural thickening or plaques",
                      "胸膜增厚或斑块"),
    "Fracture": ("a fracture", "a fracture", "骨折"),
    "Support Devices": ("a support device (line, tube, wire or pacemaker)", "support devices",
                        "支持装置（导管、导线或起搏器）"),
}
ASKABLE = tuple(TERMS)  # every CheXpert observation except "No Finding"

_GENERIC = {
    "en": ["Is there {np}?", "Does this X-ray show {np}?", "Any sign of {bare}?"],
    "zh": ["有{zh}吗？", "这张X光片显示{zh}了吗？", "是否存在{zh}？"],
}
_EXTRA = {  # more natural phrasings where the generic ones sound stiff
    "Enlarged Cardiomediastinum": {"en": ["Is the mediastinum widened?"], "zh": ["纵隔是否增宽？"]},
    "Cardiomegaly": {"en": ["Is the heart enlarged?"], "zh": ["心脏是否增大？"]},
    "Support Devices": {"en": ["Are any lines, tubes or devices visible?"],
                        "zh": ["能看到导管、导线或其他装置吗？"]},
    "Fracture": {"en": ["Are there any fractures?"], "zh": ["有没有骨折？"]},
}


def questions(observation: str, lang: str) -> list[str]:
    """All "is there X?" phrasings for one observation in ``lang``."""
    np_, bare, zh = TERMS[observation]
    out = [t.format(np=np_, bare=bare, zh=zh) for t in _GENERIC[lang]]
    return out + _EXTRA.get(observation, {}).get(lang, [])


_NUMBERING = re.compile(r"^\s*\d+\.\s*")


def _evidence(clause: str | None, lang: str) -> str:
    """Report clause as a tidy sentence: numbering dropped, one closing stop."""
    if not clause:
        return ""
    c = _NUMBERING.sub("", clause.strip()).rstrip(" ,;，；、")
    if lang == "zh":
        return c if c.endswith(("。", "！", "？")) else c + "。"
    c = c[:1].upper() + c[1:]
    return c if c.endswith((".", "!", "?")) else c + "."


def observation_answer(observation: str, value: int | None, lang: str, clause: str | None = None) -> str:
    """Answer to "is there <observation>?" from the labeler's value, quoting the deciding clause."""
    np_, bare, zh = TERMS[observation]
    ev = _evidence(clause, lang)
    if lang == "zh":
        head = {1: "是的，有。", 0: "没有。", -1: "可能有，但不能确定。"}.get(value)
        return f"{head}{ev}" if head else f"报告中没有提到{zh}。"
    head = {1: "Yes.", 0: "No.", -1: "Possibly, but it is not certain."}.get(value)
    return f"{head} {ev}".strip() if head else f"The report does not mention {bare}."


ANSWER_KIND = {1: "yes", 0: "no", -1: "uncertain", None: "not mentioned"}
