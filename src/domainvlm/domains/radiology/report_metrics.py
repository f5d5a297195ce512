"""Report-generation metrics computed as R2Gen does (pycocoevalcap BLEU-1..4, METEOR, ROUGE-L, CIDEr).

Preprocessing (both predictions and references), so numbers are comparable with R2Gen-style papers:

* ``lang="en"``: R2Gen's report cleaner (``clean_report_mimic_cxr``, which is the IU-Xray cleaner plus
  newline/space/underscore squashing): drop numbering ("1. ", " 2. "...), collapse "..", lower-case, split
  sentences on ". ", delete the characters ``" / \\ '`` and the class ``[.,?;*!%^&_+():-\\[\\]{}]`` (note
  ``:-\\[`` is a range, R2Gen's quirk, kept as is), drop empty sentences (R2Gen's ``!= []`` test never
  drops them: the only deviation), join sentences with " . " and end with " .". Tokens = whitespace split,
  so "." is a token, as in R2Gen. R2Gen additionally maps out-of-vocabulary words to <unk> and truncates to
  its max length; a model-agnostic evaluator cannot, so it does not.
* ``lang="zh"``: one token per CJK character (no segmenter, so scores do not depend on jieba's dictionary);
  runs of Latin letters/digits stay one lower-cased token (e.g. "x", "picc"); all punctuation is dropped.

Scores are corpus-level (pycocoevalcap's ``compute_score`` over dicts id -> [text]). CIDEr's IDF comes
from the references given, so it needs a corpus: one pair always scores 0. METEOR runs pycocoevalcap's
``meteor-1.5.jar`` and needs ``java`` on PATH; without it (or if it fails) ``meteor`` is None and a warning
is issued. The JVM (10-25 s to start: it loads paraphrase tables) is started once per process. For "zh",
METEOR runs on the character tokens with its English settings, so only exact matches count: indicative only.
"""

from __future__ import annotations

import re
import shutil
import threading
import warnings

from ...errors import UserError

_SENT_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_ZH_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[a-z0-9]+")


def clean_report_en(text: str) -> str:
    """R2Gen's report cleaner (see module doc)."""
    t = text.replace("\n", " ")
    for a, b in (("__", "_"), ("  ", " "), ("..", ".")):
        while a in t:
            t = t.replace(a, b)
    t = t.replace("1. ", "")
    for n in "2345":
        t = t.replace(f". {n}. ", ". ")
    for n in "2345":
        t = t.replace(f" {n}. ", ". ")
    sents = t.strip().lower().split(". ")
    cleaned = [_SENT_PUNCT.sub("", s.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip())
               for s in sents]
    cleaned = [" ".join(s.split()) for s in cleaned]
    return " . ".join(s for s in cleaned if s) + " ."


def tokenize_zh(text: str) -> str:
    return " ".join(_ZH_TOKEN.findall(text.lower()))


def preprocess(text: str, lang: str = "en") -> str:
    if lang == "zh":
        return tokenize_zh(text)
    if lang == "en":
        return clean_report_en(text)
    raise UserError(f"lang must be 'en' or 'zh', not {lang!r}")


_meteor = None
_meteor_lock = threading.Lock()


def _meteor_scorer():
    """Shared pycocoevalcap Meteor (one JVM per process); None if java is missing."""
    global _meteor
    with _meteor_lock:
        if _meteor is None:
            if shutil.which("java") is None:
                return None
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor = Meteor()
        return _meteor


def _compute_meteor(gts, res):
    global _meteor
    scorer = _meteor_scorer()
    if scorer is None:
        warnings.warn("METEOR needs Java ('java' not found on PATH): meteor = None", RuntimeWarning,
                      stacklevel=3)
        return None
    try:
        score, _ = scorer.compute_score(gts, res)
        return float(score)
    except Exception as e:  # a dead or confused JVM: drop it so the next call starts a fresh one
        with _meteor_lock:
            _meteor = None
        warnings.warn(f"METEOR failed ({e.__class__.__name__}: {e}): meteor = None", RuntimeWarning,
                      stacklevel=3)
        return None


def _check_inputs(predictions, references):
    if not isinstance(predictions, (list, tuple)) or not predictions:
        raise UserError("report metrics: predictions must be a non-empty list of strings")
    if not isinstance(references, (list, tuple)) or len(references) != len(predictions):
        raise UserError(f"report metrics: {len(predictions)} prediction(s) but "
                        f"{len(references) if isinstance(references, (list, tuple)) else '?'} reference(s)")
    refs = []
    for i, (p, r) in enumerate(zip(predictions, references)):
        if not isinstance(p, str):
            raise UserError(f"report metrics: predictions[{i}] must be a string")
        r = [r] if isinstance(r, str) else r
        if not isinstance(r, (list, tuple)) or not r or not all(isinstance(x, str) for x in r):
            raise UserError(f"report metrics: references[{i}] must be a string or a non-empty list of strings")
        refs.append(list(r))
    return refs


def report_metrics(predictions: list[str], references, lang: str = "en", meteor: bool = True) -> dict:
    """``{"bleu_1".."bleu_4", "meteor", "rouge_l", "cider"}`` over the corpus. ``references`` holds one string
    or a list of strings per prediction. ``meteor=False`` skips the JVM (value None)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = _check_inputs(predictions, references)
    res = {i: [preprocess(p, lang)] for i, p in enumerate(predictions)}
    gts = {i: [preprocess(x, lang) for x in r] for i, r in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out["meteor"] = _compute_meteor(gts, res) if meteor else None
    out["rouge_l"] = float(rouge)
    out["cider"] = float(cider)
    return out
