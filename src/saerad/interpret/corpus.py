"""What every describer reads and returns: the corpus of training reports (sentences, single statements and their
document frequencies), a feature as a describer sees it, a description, and the extractive statement that the
default describer states and the LLM describers fall back to."""

from __future__ import annotations

import re
from collections import Counter
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
    if best is None:
        return ""
    # Say it with the firing reports' own sentence: one that states only this, else the most common one that states
    # it (sentences that lost a de-id token last, then shorter).
    options: Counter = Counter()
    for r in firing:
        for sentence, statements, clean in corpus.sentences[r]:
            if best in statements:
                options[(len(statements) > 1, not clean, sentence)] += 1
    if not options:  # No Finding, which normal FINDINGS state by saying nothing abnormal
        return NORMAL_SENTENCE
    (_, _, sentence), _ = min(options.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1], len(kv[0][2]), kv[0][2]))
    sentence = sentence[0].upper() + sentence[1:]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


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
