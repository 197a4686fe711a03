"""Offline rule-based CheXpert-style labeler (not CheXbert): 14 observations, negation and uncertainty scopes,
laterality and severity per mention. Mentions also cover a few observations beyond CheXpert's (EXTRA_OBSERVATIONS),
which describe features but never enter a report's CheXpert labels.

Per sentence: find mention phrases (minus exclusions), then the nearest negation or uncertainty trigger before the
mention (within 10 words) or after it (within 5 words), a trigger's scope ending at a terminator ("but", "which",
";", "there is", ...). Uncertainty beats negation for one mention. Per report, the CheXpert aggregation over mentions:
positive beats uncertain beats negative; No Finding is positive only when no observation other than Support Devices
is positive or uncertain.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

from ..data.reports import normalize_deid, split_sentences
from . import phrases
from .phrases import EXTRA_OBSERVATIONS, OBSERVATIONS, SECTION_OF, TOP5

__all__ = ["EXTRA_OBSERVATIONS", "OBSERVATIONS", "SECTION_OF", "TOP5", "label_mentions", "label_report",
           "label_sentence"]

PRE_WINDOW, POST_WINDOW, MODIFIER_WINDOW = 10, 5, 6
_RANK = {"negative": 0, "uncertain": 1, "positive": 2}


def _compile(patterns: list) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(f"(?:{p})" for p in patterns) + r")(?![a-z0-9])")


@lru_cache(maxsize=None)
def _patterns() -> dict:
    compiled = {
        "pseudo": _compile(phrases.PSEUDO),
        "neg_pre": _compile(phrases.NEG_PRE), "neg_post": _compile(phrases.NEG_POST),
        "unc_pre": _compile(phrases.UNC_PRE), "unc_post": _compile(phrases.UNC_POST),
        "term": _compile(phrases.TERMINATORS), "no_finding": _compile(phrases.NO_FINDING),
        "mention": {obs: _compile(p) for obs, p in phrases.MENTIONS.items()},
        "unmention": {obs: _compile(p) for obs, p in phrases.UNMENTIONS.items()},
        "qualified": [(obs, _compile([anat]), _compile([abn]), _compile([nor]))
                      for obs, anat, abn, nor in phrases.QUALIFIED],
        "laterality": [(_compile([p]), v) for p, v in phrases.LATERALITY],
        "severity": [(_compile([p]), v) for p, v in phrases.SEVERITY],
    }
    return compiled


def _spans(pattern: re.Pattern, text: str) -> list:
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def _overlaps(span: tuple, spans: list) -> bool:
    return any(span[0] < e and s < span[1] for s, e in spans)


def _words(text: str) -> int:
    return len(text.split())


class _Sentence:
    """Trigger and terminator spans of one lower-cased sentence."""

    def __init__(self, text: str):
        p = _patterns()
        self.text = text
        pseudo = _spans(p["pseudo"], text)
        unc = [(s, "uncertain", kind) for kind in ("pre", "post") for s in _spans(p[f"unc_{kind}"], text)
               if not _overlaps(s, pseudo)]
        unc_spans = [s for s, _, _ in unc]
        neg = [(s, "negative", kind) for kind in ("pre", "post") for s in _spans(p[f"neg_{kind}"], text)
               if not _overlaps(s, pseudo) and not _overlaps(s, unc_spans)]
        self.triggers = unc + neg
        self.terminators = _spans(p["term"], text)

    def _blocked(self, a: int, b: int) -> bool:
        return any(a <= s and e <= b for s, e in self.terminators)

    def status(self, start: int, end: int) -> str:
        """Status of the mention at [start, end) from the nearest trigger in scope on each side."""
        before = [(e, status) for (s, e), status, kind in self.triggers
                  if kind == "pre" and e <= start and _words(self.text[e:start]) <= PRE_WINDOW
                  and not self._blocked(e, start)]
        after = [(-s, status) for (s, e), status, kind in self.triggers
                 if kind == "post" and s >= end and _words(self.text[end:s]) <= POST_WINDOW
                 and not self._blocked(end, s)]
        found = {max(before)[1] if before else None, max(after)[1] if after else None}
        if "uncertain" in found:
            return "uncertain"
        return "negative" if "negative" in found else "positive"

    def modifier(self, start: int, end: int, table: list) -> Optional[str]:
        """The laterality or severity word nearest the mention within its clause."""
        best = None
        for pattern, value in table:
            for s, e in _spans(pattern, self.text):
                if e <= start:
                    gap = self.text[e:start]
                    far = _words(gap) > MODIFIER_WINDOW or self._blocked(e, start)
                elif s >= end:
                    gap = self.text[end:s]
                    far = _words(gap) > MODIFIER_WINDOW or self._blocked(end, s)
                else:
                    gap, far = "", False
                if not far and (best is None or len(gap) < best[0]):
                    best = (len(gap), value)
        return best[1] if best else None


def _clean(text: str) -> str:
    return " ".join(normalize_deid(text).lower().split())


def label_sentence(text: str) -> list[dict]:
    """Mentions in one sentence: `label`, `status`, `laterality`, `severity`, `text`, `start`, `end`."""
    text = _clean(text)
    p = _patterns()
    sentence = _Sentence(text)
    found = []  # (label, start, end, fixed status or None)
    for obs, pattern in p["mention"].items():
        excluded = _spans(p["unmention"][obs], text) if obs in p["unmention"] else []
        for span in _spans(pattern, text):
            if not _overlaps(span, excluded):
                found.append((obs, span[0], span[1], None))
    for obs, anatomy, abnormal, normal in p["qualified"]:
        for a_start, a_end in _spans(anatomy, text):
            if any(f[0] == obs and f[1] < a_end and a_start < f[2] for f in found):
                continue
            for pattern, fixed in ((abnormal, None), (normal, "negative")):
                hits = [s for s in _spans(pattern, text) if s[0] >= a_end and _words(text[a_end:s[0]]) <= 4
                        and not sentence._blocked(a_end, s[0])]
                if fixed and not hits:  # "normal heart size": the qualifier right before the anatomy
                    hits = [s for s in _spans(pattern, text) if s[1] <= a_start and not text[s[1]:a_start].strip()]
                if hits:
                    found.append((obs, hits[0][0], hits[0][1], fixed))
                    break
    for span in _spans(p["no_finding"], text):
        found.append(("No Finding", span[0], span[1], "positive"))
    mentions = []
    for obs, start, end, fixed in sorted(found, key=lambda f: (f[1], f[0])):
        status = fixed or sentence.status(start, end)
        laterality = sentence.modifier(start, end, p["laterality"])
        if laterality is None and re.search(r"(effusions|pneumothoraces)$", text[start:end]):
            laterality = "bilateral"
        mentions.append({"label": obs, "status": status, "laterality": laterality,
                         "severity": sentence.modifier(start, end, p["severity"]),
                         "text": text[start:end], "start": start, "end": end})
    return mentions


def label_mentions(text: str) -> list[dict]:
    """Mentions of a whole report, sentence by sentence (each with its `sentence` index)."""
    out = []
    for i, sentence in enumerate(split_sentences(text or "")):
        for clause in re.split(r";", sentence):
            out.extend({**m, "sentence": i} for m in label_sentence(clause))
    return out


def is_normal(present) -> bool:
    """CheXpert's No Finding rule over the observations a report states as positive or uncertain: none of the 14
    but Support Devices (the labeler's extra observations do not count)."""
    return not any(obs in OBSERVATIONS and obs not in ("No Finding", "Support Devices") for obs in present)


def aggregate(mentions: list[dict]) -> dict[str, str]:
    """CheXpert aggregation: per observation positive > uncertain > negative; then the No Finding rule."""
    labels: dict = {}
    for m in mentions:
        if m["label"] == "No Finding" or m["label"] not in OBSERVATIONS:
            continue
        if m["label"] not in labels or _RANK[m["status"]] > _RANK[labels[m["label"]]]:
            labels[m["label"]] = m["status"]
    if is_normal(obs for obs, s in labels.items() if s in ("positive", "uncertain")):
        labels["No Finding"] = "positive"
    return {obs: labels[obs] for obs in OBSERVATIONS if obs in labels}


def label_report(text: str) -> dict[str, str]:
    """CheXpert observations of a report: `"positive"`, `"negative"` or `"uncertain"`; absent when not mentioned."""
    return aggregate(label_mentions(text))
