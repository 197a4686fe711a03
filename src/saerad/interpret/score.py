"""Interpretability scores: does a feature's description predict when it fires?

For each feature, on held-out rows: the AUROC of its activation as a predictor of "the reference report states what
the description states". A description with labeler findings is matched on them (label and presence, and side
where both state one), so a normal-anatomy description ("The heart size is normal.") is scored on "the report states
it normal"; a description without findings is matched on its normalised sentences.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..data.reports import normalize_sentence, split_sentences
from ..labeler import label_mentions


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> Optional[float]:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ReportIndex:
    """What each reference report states: labeler mentions and normalised sentences."""

    def __init__(self, reports: Sequence[str]):
        self.mentions = [label_mentions(r or "") for r in reports]
        self.sentences = [{normalize_sentence(s) for s in split_sentences(r or "")} for r in reports]

    def states(self, i: int, findings: list, description: str) -> bool:
        if findings:
            return all(self._states_finding(i, f) for f in findings)
        wanted = {normalize_sentence(s) for s in split_sentences(description)}
        return bool(wanted & self.sentences[i])

    def _states_finding(self, i: int, finding: dict) -> bool:
        present = finding["status"] != "negative"
        for m in self.mentions[i]:
            if m["label"] != finding["label"] or (m["status"] != "negative") != present:
                continue
            side, other = finding.get("laterality"), m["laterality"]
            if side is None or other is None or side == other or "bilateral" in (side, other):
                return True
        return False


def score_features(features: list[dict], activations: np.ndarray, index: ReportIndex) -> None:
    """Write each described feature's AUROC into `feature["score"]` (None when undefined)."""
    for feature in features:
        if not feature["description"]:
            feature["score"] = None
            continue
        labels = [index.states(i, feature["findings"], feature["description"]) for i in range(activations.shape[0])]
        feature["score"] = auroc(activations[:, feature["id"]], labels)
