"""The wafer head's structured answers: input check, diagnosis, confidence, abstention, annotators, text.

:func:`assess_rows` turns the diagnosis rows of a batch (maps whose question asks for a diagnosis) into
:class:`~domainvlm.inference.assessment.Assessment` objects:

1. an image that is no wafer map (input_check.py) abstains at once (``out_of_domain``), as does a map with no
   dies or no passing die (``unreadable``); the model is not run for them;
2. the others are diagnosed by the greedy trie walk, exactly as without confidence; when confidence is on,
   every valid line is scored from the same prefill (confidence.py) and the walk's line gets its calibrated
   probability (with ``tta`` the answer is instead the best line of the 8 views' mean);
3. below the stored threshold the answer abstains (``low_confidence``) but keeps its best guess;
4. each annotator of the head (``head.annotators``, e.g. evidence and map facts) is called as
   ``fn(assessment, image, lang)`` for every assessment except ``out_of_domain`` ones.

A text-only question that asks for a diagnosis gets :func:`no_image`'s abstention (``no_image``) instead of a
made-up diagnosis from free decoding.

:func:`text` words an assessment in its language: for a confident answer without confidence scoring it is
exactly the trained answer (diagnosis line + explanation).
"""

from __future__ import annotations

import torch

from ...inference import confidence as ic
from ...inference.assessment import NO_IMAGE, OUT_OF_DOMAIN, UNREADABLE, Assessment
from . import input_check
from . import knowledge as wk


def wants_confidence(head) -> bool:
    """Confidence is scored when asked (``head.confidence`` True), or by default when the model has a stored
    abstention threshold or test-time augmentation."""
    if head.confidence is not None:
        return bool(head.confidence) or head.tta
    return head.calibration.threshold is not None or head.tta


def select(head, pv, g, rows: list[int]):
    """The pixel values and grid rows of some of a batch's images (each image has n_patches patch rows)."""
    n = head.n_patches
    sel = torch.cat([torch.arange(j * n, (j + 1) * n) for j in rows]).to(pv.device)
    return pv[sel], g[rows]


def assess_rows(head, pv, g, images, prompts: list[list[int]], langs: list[str], checked: list) -> list[Assessment]:
    """``checked``: :func:`.input_check.check_batch` of the images (None per image that passed)."""
    out: list[Assessment | None] = [None] * len(images)
    ok = []
    for i, bad in enumerate(checked):
        if bad is None:
            ok.append(i)
        else:
            out[i] = Assessment(labels=(), confidence=None, abstain=True, reason=bad[0], lang=langs[i], detail=bad[1])
    if ok:
        if len(ok) < len(images):
            pv, g = select(head, pv, g, ok)
        for i, a in zip(ok, _diagnosed(head, pv, g, [images[i] for i in ok], [prompts[i] for i in ok],
                                       [langs[i] for i in ok])):
            out[i] = a
    for a, im in zip(out, images) if head.annotators else ():  # no picture drawn (host time) without them
        if a.reason != OUT_OF_DOMAIN:
            pic = im.to_pil() if hasattr(im, "to_pil") else im  # annotators read a picture (MapCanvas: drawn now)
            for fn in head.annotators:
                fn(a, pic, a.lang)
    return out


def _diagnosed(head, pv, g, images, prompts, langs) -> list[Assessment]:
    from .confidence import line_logprobs, tta_logprobs

    if not wants_confidence(head):
        found = head.diagnose(pv, g, prompts, langs)
        return [Assessment(labels=tuple(d), confidence=None, lang=lang) for d, lang in zip(found, langs)]
    if head.tta:
        lp = tta_logprobs(head, images, prompts, langs)
        chosen = lp.argmax(-1).tolist()
    else:
        state: dict = {}
        found = head.diagnose(pv, g, prompts, langs, state=state)
        lp = line_logprobs(head, state, langs)
        chosen = [head.lines.index[tuple(d)] for d in found]
        differs = int((lp.argmax(-1) != torch.tensor(chosen, device=lp.device)).sum())
        head.stats["scored"] += len(chosen)
        head.stats["argmax_differs"] += differs  # greedy walk kept; its line's probability reported
    probs = ic.distribution(lp, head.calibration.temperature)
    return ic.assessments(probs, chosen, head.lines.sets, head.tax.names, langs, head.calibration,
                          head.member, lp)


def no_image(head, messages: list[dict], images: list) -> Assessment | None:
    """The ``no_image`` abstention for a text-only question that asks for a diagnosis or a map fact ("what
    defect does this wafer show?", "what is the yield?"), else None: a knowledge question ("what is an
    edge-ring pattern?") or an off-topic one is still decoded freely, as before (inference/no_image.py)."""
    from ...inference.no_image import ABOUT_CLASS, needs_input, text_only
    from .intent import question_lang, wants_diagnosis
    from .questions import fact_question, named_pattern

    if not text_only(messages, images):
        return None
    q = str(messages[-1].get("content") or "")
    lang = question_lang(q)
    intent = lambda s: wants_diagnosis(s) or fact_question(s, head.tax) is not None  # noqa: E731
    about_class = lambda s: bool(named_pattern(s, head.tax) and ABOUT_CLASS[lang].search(s))  # noqa: E731
    if not needs_input(q, intent, about_class):
        return None
    return Assessment(labels=(), confidence=None, abstain=True, reason=NO_IMAGE, lang=lang)


def knowledge_answer(head, messages: list[dict], images: list) -> str | None:
    """A text-only general question about one named pattern ("What is an edge-ring pattern?", "什么是边缘环？"):
    the taxonomy's own description and typical causes of it (the explanation the model was trained to write
    after that diagnosis line), in the question's language; None for anything else. The small LM decoding it
    freely wrote a made-up diagnosis line instead (it never saw a question without a map)."""
    from ...inference.no_image import knowledge_question, text_only
    from .intent import question_lang
    from .questions import named_pattern

    if not text_only(messages, images):
        return None
    q = str(messages[-1].get("content") or "")
    pattern = named_pattern(q, head.tax)
    if pattern is None or not knowledge_question(q):
        return None
    return wk.explain((pattern,), question_lang(q), head.tax).removeprefix("- ")


def help_answer(head, messages: list[dict], images: list) -> str | None:
    """A text-only turn that asks for neither a diagnosis nor a named pattern (the caller has ruled out
    :func:`no_image` and :func:`knowledge_answer`), to a model whose LM learnt only our answers ("hello", "what
    can you do?"): what the expert answers, in the question's language; None otherwise (a real base chats freely)."""
    from ...inference.no_image import answers_only_lm, text_only
    from .intent import question_lang

    if not text_only(messages, images) or not answers_only_lm(head.model):
        return None
    return input_check.help_message(question_lang(str(messages[-1].get("content") or "")))


def text(head, a: Assessment) -> str:
    if a.reason in (OUT_OF_DOMAIN, UNREADABLE, NO_IMAGE):
        return "\n".join([input_check.message(a.reason, a.detail, a.lang), *a.notes])
    base = wk.answer(a.labels, a.lang, True, head.tax)
    if a.confidence is None and not a.notes:
        return base
    return ic.with_confidence(base, a, head.calibration)
