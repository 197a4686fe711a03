"""Offline rule-based CheXpert-style labeler (not CheXbert): 14 observations, negation and uncertainty scopes,
laterality and severity per mention. Mentions also cover a few observations beyond CheXpert's (EXTRA_OBSERVATIONS),
which describe features but never enter a report's CheXpert labels.

Per sentence: find mention phrases (minus exclusions), then the nearest negation or uncertainty trigger before the
mention (within 10 words) or after it (within 5 words), a trigger's scope ending at a terminator ("but", "which",
";", "there is", ...). Uncertainty beats negation for one mention. Per report, the CheXpert aggregation over mentions:
positive beats uncertain beats negative; No Finding is positive only when no observation other than Support Devices
is positive or uncertain.

Standalone: it imports only the standard library and its sibling files, so the metric Spaces ship this very file
(`saerad push --metrics`) and `saerad.labeler` re-exports it.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache
from typing import Optional

from . import chexpert_phrases as phrases
from .chexpert_phrases import EXTRA_OBSERVATIONS, OBSERVATIONS, SECTION_OF, TOP5
from .report_text import normalize_deid, split_sentences

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


class _Spans:
    """Spans sorted by start, for overlap and nearest-neighbour queries in O(log n) (spans are phrases: short)."""

    def __init__(self, spans: list):
        self.spans = sorted(spans)
        self.starts = [s for s, _ in self.spans]
        self.longest = max((e - s for s, e in self.spans), default=0)

    def overlapping(self, a: int, b: int) -> list:
        """Indices of the spans that overlap [a, b)."""
        found, i = [], bisect_left(self.starts, b) - 1
        while i >= 0 and self.starts[i] > a - self.longest - 1:
            if self.spans[i][1] > a and self.spans[i][0] < b:
                found.append(i)
            i -= 1
        return sorted(found)

    def overlaps(self, a: int, b: int) -> bool:
        return bool(self.overlapping(a, b))

    def add(self, span: tuple) -> None:
        i = bisect_left(self.spans, span)
        self.spans.insert(i, span)
        self.starts.insert(i, span[0])
        self.longest = max(self.longest, span[1] - span[0])


class _Sentence:
    """Trigger, terminator and word-boundary indexes of one lower-cased sentence: every query is O(log n), so a
    sentence of n characters labels in about O(n log n) (a run-on sentence was cubic)."""

    def __init__(self, text: str):
        p = _patterns()
        self.text = text
        # word_starts[c]: how many words start before c; a slice's words are counted from it
        self.word_starts = [0] * (len(text) + 1)
        for i, ch in enumerate(text):
            starts = not ch.isspace() and (i == 0 or text[i - 1].isspace())
            self.word_starts[i + 1] = self.word_starts[i] + starts
        pseudo = _Spans(_spans(p["pseudo"], text))
        unc = [(s, "uncertain", kind) for kind in ("pre", "post") for s in _spans(p[f"unc_{kind}"], text)
               if not pseudo.overlaps(*s)]
        unc_spans = _Spans([s for s, _, _ in unc])
        neg = [(s, "negative", kind) for kind in ("pre", "post") for s in _spans(p[f"neg_{kind}"], text)
               if not pseudo.overlaps(*s) and not unc_spans.overlaps(*s)]
        triggers = unc + neg
        self.pre = sorted((e, status) for (s, e), status, kind in triggers if kind == "pre")
        self.pre_ends = [e for e, _ in self.pre]
        self.post = sorted((s, status) for (s, e), status, kind in triggers if kind == "post")
        self.post_starts = [s for s, _ in self.post]
        self.terminators = _spans(p["term"], text)  # one regex: sorted, not overlapping
        self.term_starts = [s for s, _ in self.terminators]
        self.tables: dict = {}

    def words(self, a: int, b: int) -> int:
        """`len(text[a:b].split())` in O(1)."""
        if b <= a:
            return 0
        return self.word_starts[b] - self.word_starts[a + 1] + (not self.text[a].isspace())

    def _blocked(self, a: int, b: int) -> bool:
        i = bisect_left(self.term_starts, a)  # the first terminator starting at or after a ends first
        return i < len(self.terminators) and self.terminators[i][1] <= b

    def status(self, start: int, end: int) -> str:
        """Status of the mention at [start, end) from the nearest trigger in scope on each side (a farther trigger
        is in scope only if the nearest is: the window and the terminators grow with the distance)."""
        found = set()
        i = bisect_right(self.pre_ends, start)
        if i:
            e = self.pre_ends[i - 1]
            if self.words(e, start) <= PRE_WINDOW and not self._blocked(e, start):
                found.add(max(st for end_, st in self.pre[bisect_left(self.pre_ends, e):i]))
        j = bisect_left(self.post_starts, end)
        if j < len(self.post):
            s = self.post_starts[j]
            if self.words(end, s) <= POST_WINDOW and not self._blocked(end, s):
                found.add(max(st for start_, st in self.post[j:bisect_right(self.post_starts, s)]))
        if "uncertain" in found:
            return "uncertain"
        return "negative" if "negative" in found else "positive"

    def modifier(self, start: int, end: int, table: list) -> Optional[str]:
        """The laterality or severity word nearest the mention within its clause (ties: the table's order)."""
        if id(table) not in self.tables:
            hits = [(s, e, rank, value) for rank, (pattern, value) in enumerate(table)
                    for s, e in _spans(pattern, self.text)]
            index = _Spans([(s, e) for s, e, _, _ in hits])
            order = sorted(range(len(hits)), key=lambda k: (hits[k][0], hits[k][1]))
            ends = sorted(range(len(hits)), key=lambda k: hits[k][1])
            self.tables[id(table)] = (hits, index, [hits[k] for k in order], [hits[k] for k in ends])
        hits, index, by_start, by_end = self.tables[id(table)]
        candidates = [(0, h[2], h[0], h[3]) for h in (by_start[i] for i in index.overlapping(start, end))]
        end_keys = [h[1] for h in by_end]
        i = bisect_right(end_keys, start)
        if i:
            e = end_keys[i - 1]
            if self.words(e, start) <= MODIFIER_WINDOW and not self._blocked(e, start):
                candidates += [(start - e, h[2], h[0], h[3]) for h in by_end[bisect_left(end_keys, e):i]]
        start_keys = [h[0] for h in by_start]
        j = bisect_left(start_keys, end)
        if j < len(by_start):
            s = start_keys[j]
            if self.words(end, s) <= MODIFIER_WINDOW and not self._blocked(end, s):
                candidates += [(s - end, h[2], h[0], h[3]) for h in by_start[j:bisect_right(start_keys, s)]]
        return min(candidates)[3] if candidates else None


def _clean(text: str) -> str:
    return " ".join(normalize_deid(text).lower().split())


def label_sentence(text: str) -> list[dict]:
    """Mentions in one sentence: `label`, `status`, `laterality`, `severity`, `text`, `start`, `end`."""
    text = _clean(text)
    p = _patterns()
    sentence = _Sentence(text)
    found = []  # (label, start, end, fixed status or None)
    by_obs: dict = {}  # observation -> its mentions so far
    for obs, pattern in p["mention"].items():
        excluded = _Spans(_spans(p["unmention"][obs], text) if obs in p["unmention"] else [])
        by_obs[obs] = _Spans([])
        for span in _spans(pattern, text):
            if not excluded.overlaps(*span):
                found.append((obs, span[0], span[1], None))
                by_obs[obs].add(span)
    for obs, anatomy, abnormal, normal in p["qualified"]:
        mentioned = by_obs.setdefault(obs, _Spans([]))
        qualifiers = [(pattern, fixed, _spans(pattern, text)) for pattern, fixed in ((abnormal, None),
                                                                                    (normal, "negative"))]
        for a_start, a_end in _spans(anatomy, text):
            if mentioned.overlaps(a_start, a_end):
                continue
            for pattern, fixed, spans in qualifiers:
                # the first qualifier after the anatomy, within 4 words and its clause (a later one is farther)
                i = bisect_left(spans, (a_end, -1))
                hit = spans[i] if i < len(spans) and sentence.words(a_end, spans[i][0]) <= 4 \
                    and not sentence._blocked(a_end, spans[i][0]) else None
                if fixed and hit is None:  # "normal heart size": the qualifier right before the anatomy
                    k = bisect_left(spans, (a_start, -1))  # one regex's spans do not overlap: only the last can
                    if k and spans[k - 1][1] <= a_start and not text[spans[k - 1][1]:a_start].strip():
                        hit = spans[k - 1]
                if hit is not None:
                    found.append((obs, hit[0], hit[1], fixed))
                    mentioned.add(hit)
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
