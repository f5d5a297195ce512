"""Report records (from :func:`~domainvlm.data.xray_sources.load_xray`) -> multi-turn instruction records.

Turn 1: the images (one ``<image>`` each) + a "write the findings and impression" prompt, answered with the
reference report; the prompt is Chinese when the report text is. Then ``qa_per_report`` "is there X?" turns
answered from :func:`~domainvlm.domain.chexpert_labeler.label_report` on that reference (yes / no / uncertain
/ not mentioned, quoting the deciding clause), and, when the source has both findings and impression and
``qa_per_report > 0``, an impression-only question. ``labels.report`` stays the turn-1 answer: the evaluator
scores that turn. ``labels.qa`` lists the asked observations and the labeler values behind the answers.
"""

from __future__ import annotations

import logging
import random

from ...data.record import IMAGE_TOKEN, Record
from ...errors import UserError
from . import prompts as rp
from .chexpert_labeler import detect_lang, label_mentions, label_report

log = logging.getLogger(__name__)


def _reference(r: Record) -> str:
    ref = r.labels.get("report")
    if isinstance(ref, str) and ref.strip():
        return ref.strip()
    return next(m["content"] for m in r.messages if m["role"] == "assistant").strip()


def _pick_observations(labels: dict, k: int, rng: random.Random) -> list[str]:
    """Mostly observations the report talks about (their answers carry information), but keep one slot
    for an unmentioned one half of the time so the model also learns to say "not mentioned"."""
    mentioned = [o for o in rp.ASKABLE if labels.get(o) is not None]
    silent = [o for o in rp.ASKABLE if labels.get(o) is None]
    rng.shuffle(mentioned)
    rng.shuffle(silent)
    n_silent = 1 if silent and k > 1 and rng.random() < 0.5 else 0
    picked = mentioned[: k - n_silent]
    picked += silent[: k - len(picked)]
    rng.shuffle(picked)
    return picked


def _deciding_clause(mentions: list[dict], observation: str, value) -> str | None:
    for m in mentions:
        if m["observation"] == observation and m["value"] == value:
            return m["clause"]
    return None


def report_instruction_record(r: Record, rng: random.Random, qa_per_report: int = 2) -> Record:
    """One report record -> instruction record (see module doc)."""
    ref = _reference(r)
    lang = detect_lang(ref)  # the text decides: a zh caption gets a zh prompt whatever meta says
    tokens = "\n".join([IMAGE_TOKEN] * len(r.images))
    prompt = rng.choice(rp.REPORT_PROMPTS[lang])
    msgs = [{"role": "user", "content": f"{tokens}\n{prompt}" if tokens else prompt},
            {"role": "assistant", "content": ref}]
    qa = []
    if qa_per_report > 0:
        labels = label_report(ref, lang)
        mentions = label_mentions(ref, lang)
        for obs in _pick_observations(labels, qa_per_report, rng):
            v = labels[obs]
            msgs += [{"role": "user", "content": rng.choice(rp.questions(obs, lang))},
                     {"role": "assistant", "content": rp.observation_answer(
                         obs, v, lang, _deciding_clause(mentions, obs, v))}]
            qa.append({"observation": obs, "value": v})
        findings, impression = r.labels.get("findings"), r.labels.get("impression")
        if findings and impression and detect_lang(impression) == lang:
            msgs += [{"role": "user", "content": rng.choice(rp.IMPRESSION_PROMPTS[lang])},
                     {"role": "assistant", "content": impression.strip()}]
    labels = {**r.labels, "task": "report", "report": ref, "lang": lang}
    if qa:
        labels["qa"] = qa
    rec = Record(id=r.id, images=list(r.images), messages=msgs, labels=labels,
                 meta={**r.meta, "lang": lang, "recipe": "report-instruct"})
    rec.check(f"record {r.id!r}")
    return rec


def build_report_records(records: list[Record], langs=("en", "zh"), qa_per_report: int = 2,
                         seed: int = 0) -> list[Record]:
    """Report records -> instruction records. Records of other tasks pass through unchanged; report records
    whose text language is not in ``langs`` are dropped (logged), and dropping all of them is an error."""
    if qa_per_report < 0:
        raise UserError(f"--qa-per-report: must be 0 or more, not {qa_per_report}")
    bad = [x for x in langs if x not in ("en", "zh")]
    if bad:
        raise UserError(f"--langs: unsupported language(s) {', '.join(bad)} (en, zh)")
    rng = random.Random(seed)
    out, dropped, n_report = [], 0, 0
    for r in records:
        if r.labels.get("task") != "report":
            out.append(r)
            continue
        n_report += 1
        if detect_lang(_reference(r)) not in langs:
            dropped += 1
            continue
        out.append(report_instruction_record(r, rng, qa_per_report))
    if n_report and dropped == n_report:
        raise UserError(f"--langs {','.join(langs)}: none of the {n_report} report(s) is in these languages")
    if dropped:
        log.warning("dropped %d of %d report(s) not in --langs %s", dropped, n_report, ",".join(langs))
    return out
