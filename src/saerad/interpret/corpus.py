"""What every describer reads and returns: the corpus of training reports (sentences, single statements and their
document frequencies), a feature as a describer sees it, a description, and the extractive statement that the
default describer states and the LLM describers fall back to."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

from ..data.reports import normalize_deid, normalize_sentence, split_sentences
from ..labeler import is_normal, label_mentions


def _statements(sentence: str) -> frozenset:
    """What a sentence states, one statement each: a labeler finding (label, presence, side), or, without findings,
    the sentence's normalised text."""
    found = {(m["label"], m["status"] != "negative", m["laterality"] or "") for m in label_mentions(sentence)}
    return frozenset(("finding", f) for f in found) if found else frozenset([("text", normalize_sentence(sentence))])


NO_FINDING = ("finding", ("No Finding", True, ""))
NORMAL_SENTENCE = "No acute cardiopulmonary abnormality."


def _normal(statements: set) -> bool:
    """Whether a report's statements make its CheXpert labels No Finding, without labelling it again."""
    return is_normal(s[0] for kind, s in statements if kind == "finding" and s[1])


class Corpus:
    """Sentences and single statements of every report, with document frequencies, for contrastive scoring."""

    def __init__(self, reports: Sequence[str]):
        self.sentences: list[list[tuple[str, frozenset, bool]]] = []  # (sentence, statements, free of de-id tokens)
        self.statements: list[set] = []  # single statements (one finding, or one finding-free sentence) per report
        self.statement_df: Counter = Counter()
        self.unsided_df: Counter = Counter()  # the same, a finding's side aside
        memo: dict = {}
        for report in reports:
            items = []
            for raw in split_sentences(report or "", deid=False):
                sentence = normalize_deid(raw)
                if not re.search(r"[A-Za-z]", sentence):
                    continue
                if sentence not in memo:
                    memo[sentence] = _statements(sentence)
                items.append((sentence, memo[sentence], not re.search(r"X{2,}|_{2,}", raw)))
            self.sentences.append(items)
            stated = set().union(*(statements for _, statements, _ in items)) - {NO_FINDING}
            if _normal(stated):  # a report states No Finding when it states nothing abnormal
                stated.add(NO_FINDING)
            self.statements.append(stated)
            self.statement_df.update(stated)
            self.unsided_df.update({_unsided(s) for s in stated})
        self.n = max(1, len(reports))


def extractive_description(corpus: Corpus, rows: Sequence[int], firing: Optional[Sequence[int]] = None,
                           prior: float = 2.0, min_rows: int = 2) -> str:
    """The report sentence whose statement best predicts where the feature fires on the corpus: `firing` (every row
    where it fires; default: its exemplar `rows`) against the other rows, by in-sample detection AUROC with the rates
    shrunk toward the corpus rate by `prior` pseudo-rows, in the firing reports' own words."""
    firing = sorted({r for r in (rows if firing is None else firing) if r >= 0})
    n_fire, n_quiet = len(firing), corpus.n - len(firing)
    if n_fire == 0 or n_quiet <= 0:
        return ""
    counts: Counter = Counter()
    for r in firing:
        counts.update(corpus.statements[r])
    best, best_score = None, 0.5
    for statement, c in counts.items():
        if c < min(min_rows, n_fire):
            continue
        base = corpus.statement_df[statement] / corpus.n
        tpr = (c + prior * base) / (n_fire + prior)
        fpr = (corpus.statement_df[statement] - c + prior * base) / (n_quiet + prior)
        score = 0.5 * (1 + tpr - fpr)
        if score > best_score or (score == best_score and best is not None and repr(statement) < repr(best)):
            best, best_score = statement, score
    return _say(corpus, best, firing) if best is not None else ""


def _say(corpus: Corpus, statement: tuple, rows: Sequence[int]) -> str:
    """A statement in the reports' own words: a sentence of `rows` that states only it, else the most common one
    that states it (sentences that lost a de-id token last, then shorter); else one from the whole corpus."""
    for where in (rows, range(len(corpus.sentences))):
        options: Counter = Counter()
        for r in where:
            for sentence, statements, clean in corpus.sentences[r]:
                if statement in statements:
                    options[(len(statements) > 1, not clean, sentence)] += 1
        if options:
            break
    if not options:  # No Finding, which normal FINDINGS state by saying nothing abnormal
        return NORMAL_SENTENCE if statement == NO_FINDING else ""
    (_, _, sentence), _ = min(options.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1], len(kv[0][2]), kv[0][2]))
    sentence = sentence[0].upper() + sentence[1:]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


def _unsided(statement: tuple) -> tuple:
    kind, what = statement
    return (kind, (what[0], what[1], "")) if kind == "finding" else statement


def enriched_description(corpus: Corpus, rows: Sequence[int], min_share: float = 0.5, min_lift: float = 2.0,
                         side_agreement: float = 0.75, prior: float = 2.0) -> str:
    """The statement a feature's exemplar `rows` state most MORE often than the corpus does (enrichment: the share
    of exemplar reports stating it over the corpus share, shrunk toward 1 by `prior` pseudo-rows), among those that
    at least `min_share` of the exemplar reports state and that reach `min_lift`; "" when none does. A finding takes
    a side only when `side_agreement` of the exemplar reports that state it with a side agree on one, and those are
    most of the reports stating it; else it is said without a side."""
    rows = sorted({r for r in rows if r >= 0})
    if not rows:
        return ""
    counts, sides = Counter(), defaultdict(Counter)
    for r in rows:
        stated = {_unsided(s) for s in corpus.statements[r]}
        counts.update(stated)
        for kind, what in corpus.statements[r]:
            if kind == "finding" and what[2]:
                sides[_unsided((kind, what))][what[2]] += 1
    best, best_lift = None, min_lift
    for statement, c in sorted(counts.items(), key=lambda kv: repr(kv[0])):
        base = corpus.unsided_df[statement] / corpus.n
        lift = (c + prior * base) / (len(rows) + prior) / base
        if c >= min_share * len(rows) and lift > best_lift:
            best, best_lift = statement, lift
    if best is None:
        return ""
    if best[0] == "finding" and sides[best]:
        side, n_side = sides[best].most_common(1)[0]
        n_sided = sum(sides[best].values())
        if n_side >= side_agreement * n_sided and n_sided > counts[best] / 2:
            return _say(corpus, ("finding", (*best[1][:2], side)), rows)
    return _say(corpus, best, rows)


@dataclass
class Feature:
    """What a describer is shown of one feature: its exemplar rows of the corpus and every row it fires on."""

    id: int
    rows: list
    firing: list


@dataclass
class Description:
    """A feature's description and where it came from: `extractive`, `llm`, or `extractive_fallback` (the LLM's
    answer, kept in `answer`, failed the guard for the reason in `rejected`)."""

    text: str
    source: str = "extractive"
    rejected: Optional[str] = None
    answer: Optional[str] = None
