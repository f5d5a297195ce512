"""Rule-based CheXpert-style labeler for English and Chinese chest X-ray reports.

For each of the 14 CheXpert observations: 1 positive, 0 negative, -1 uncertain, None not mentioned.
Method (NegBio/CheXpert in spirit, with regular expressions instead of a dependency parse):

1. split the report into clauses (sentence ends, ';', and "but/however/..." or '，' / '但' in Chinese);
2. find mentions (phrase lists in :mod:`.chexpert_rules`, longest match first), including anatomy whose
   polarity comes from the nearest size attribute in the clause ("heart size is normal" -> Cardiomegaly 0);
3. classify each mention by the cues in its clause, in this order: strong uncertainty ("cannot be
   excluded") -> -1; negation before it (scope: to the end of the clause) or just after it ("is not seen")
   -> 0; uncertainty before it (within a short window) or just after it, or "A versus B" -> -1; else 1.
   Negation beats ordinary uncertainty, so "no suspicious opacity" is negative;
4. aggregate per observation: positive > uncertain > negative (CheXpert's rule);
5. "No Finding" = 1 when no pathology (everything except Support Devices) is 1 or -1, else None.
"""

from __future__ import annotations

import re
from functools import cache

from .chexpert_rules import EN, OBSERVATIONS, ZH, Rules

__all__ = ["OBSERVATIONS", "PATHOLOGIES", "detect_lang", "label_mentions", "label_report"]

PATHOLOGIES = tuple(o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices"))
_CJK = re.compile(r"[\u4e00-\u9fff]")
_RANK = {1: 3, -1: 2, 0: 1, None: 0}  # aggregation precedence


def detect_lang(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"


@cache
def _compiled(lang: str):
    rules: Rules = EN if lang == "en" else ZH
    wrap = (lambda p: rf"(?<!\w)(?:{p})(?!\w)") if rules.word_bounded else (lambda p: p)
    flags = re.IGNORECASE
    mentions = [(kind, re.compile(wrap(p), flags)) for kind, p in rules.mentions]
    cues = [(kind, re.compile(wrap(p), flags)) for kind, p in rules.cues]
    # "A/B" offers alternatives like "A versus B"; the slash sits between words, so no word bounds
    cues.append(("unc_two", re.compile(r"(?<=\w)\s*/\s*(?=\w)")))
    attrs = [(1, re.compile(wrap(rules.attr_pos), flags)), (0, re.compile(wrap(rules.attr_neg), flags))]
    return rules, mentions, cues, attrs, re.compile(rules.clause_split)


def _greedy(matches):
    """Non-overlapping matches, longest first (ties: earlier pattern in the list)."""
    chosen = []
    for m in sorted(matches, key=lambda m: (-(m[1] - m[0]), m[3])):
        if all(m[1] <= c[0] or m[0] >= c[1] for c in chosen):
            chosen.append(m)
    return sorted(chosen)


def _scan(text, patterns):
    out = []
    for order, (kind, rx) in enumerate(patterns):
        out += [(m.start(), m.end(), kind, order) for m in rx.finditer(text)]
    return _greedy(out)


def _classify(clause, ks, ke, cues, rules) -> tuple[int, str | None]:
    """Value and deciding cue for a mention whose key span is [ks, ke) in ``clause``."""
    def pre(c, window=None):
        return c[1] <= ks and (window is None or ks - c[1] <= window)

    def post(c, window):
        return c[0] >= ke and c[0] - ke <= window

    def two(c):
        gap = clause[ke:c[0]] if c[0] >= ke else clause[c[1]:ks]
        return (c[0] >= ke or c[1] <= ks) and len(gap) <= rules.win_two and not re.search(r"[,，、]", gap)

    tests = (
        (-1, lambda c: c[2] == "unc_strong" and (pre(c) or post(c, rules.win_post))),
        (0, lambda c: c[2] in ("neg_pre", "neg_either") and pre(c)),
        (0, lambda c: c[2] in ("neg_post", "neg_either") and post(c, rules.win_post)),
        (-1, lambda c: c[2] in ("unc_pre", "unc_either") and pre(c, rules.win_pre_unc)),
        (-1, lambda c: c[2] in ("unc_post", "unc_either") and post(c, rules.win_post)),
        (-1, lambda c: c[2] == "unc_two" and two(c)),
    )
    for value, test in tests:
        for c in cues:
            if test(c):
                return value, clause[c[0]:c[1]].strip() or c[2]
    return 1, None


def _clauses(text, split_rx):
    return [c for c in split_rx.split(text) if c.strip()]


def label_mentions(text: str, lang: str | None = None) -> list[dict]:
    """Every mention found: ``{"observation", "text", "value", "cue", "clause"}`` (for explanations/tests)."""
    lang = lang or detect_lang(text)
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', not {lang!r}")
    rules, mentions, cue_rx, attr_rx, split_rx = _compiled(lang)
    found = []
    for clause in _clauses(text or "", split_rx):
        ms = _scan(clause, mentions)
        taken = [(m[0], m[1]) for m in ms]
        cues = [c for c in _scan(clause, cue_rx) if c[2] != "neutral"
                and all(c[1] <= s or c[0] >= e for s, e in taken)]
        attrs = [a for a in _scan(clause, attr_rx) if all(a[1] <= s or a[0] >= e for s, e in taken)]
        for s, e, kind, _ in ms:
            if kind == "IGNORE":
                continue
            obs, ks, ke, shown = kind, s, e, clause[s:e]
            if kind.startswith("ANAT:"):
                obs = kind[5:]
                if not attrs:
                    continue
                a = min(attrs, key=lambda a: a[0] - e if a[0] >= e else s - a[1])
                shown = clause[min(s, a[0]):max(e, a[1])]
                if a[2] == 0:  # "normal": a negative mention, whatever else the clause says
                    found.append({"observation": obs, "text": shown, "value": 0, "cue": clause[a[0]:a[1]],
                                  "clause": clause.strip()})
                    continue
                ks, ke = max(s, a[0]), max(e, a[1])  # cues between anatomy and attribute count as "before"
            value, cue = _classify(clause, ks, ke, cues, rules)
            found.append({"observation": obs, "text": shown, "value": value, "cue": cue, "clause": clause.strip()})
    return found


def label_report(text: str, lang: str | None = None) -> dict[str, int | None]:
    """Labels for all 14 observations (see module doc). ``lang`` defaults to 'zh' when the text has CJK."""
    labels: dict[str, int | None] = {o: None for o in OBSERVATIONS}
    for m in label_mentions(text, lang):
        if _RANK[m["value"]] > _RANK[labels[m["observation"]]]:
            labels[m["observation"]] = m["value"]
    if not any(labels[o] in (1, -1) for o in PATHOLOGIES):
        labels["No Finding"] = 1
    return labels
