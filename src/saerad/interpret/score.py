"""Interpretability scores: does a feature's description predict when it fires?

Detection scoring (Paulo et al. 2024, with the reference report as the simulator's evidence): on held-out rows, the
prediction for a row is how much of the description its reference report states, the truth is whether the feature
fires there, and the score is the AUROC of that prediction. A description with labeler findings is matched on them
(label and presence, and side where both state one), so "The heart size is normal." is predicted wherever the report
states the heart normal; a description without findings is matched on its normalised sentences. A feature scores
high only when the reports of the rows it fires on state its description and the reports of the other rows do not,
whatever its firing frequency. A feature that fires on fewer than `min_support` held-out rows (or is silent on fewer)
is not scored: one or two firings give an AUROC that is mostly chance (on the demo's 324 validation rows, 55 of the
153 features at AUROC >= 0.75 fired on one or two rows).

An AUROC says the description ranks the rows; it does not say the description is true where the feature fires (a
feature firing on 40% of the rows whose reports state cardiomegaly and on 10% of the others ranks well and is wrong
two times in three). So each scored feature also gets its held-out precision: the mean share of its description that
the reports of the rows it fires on state. `choose_precision_threshold` picks, on the same held-out rows, the precision
a feature needs to write: the one whose composed reports agree best with the references, precision weighted twice.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..data.reports import normalize_sentence, split_sentences
from ..labeler import aggregate, label_mentions

MIN_SUPPORT = 5


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
    """What each reference report states: labeler mentions and normalised sentences, with inverted indexes so that
    a description's prediction over every row is a few array operations."""

    def __init__(self, reports: Sequence[str]):
        # No Finding is what a whole report states (nothing abnormal), not a phrase: as the evaluation labels it
        normal = {"label": "No Finding", "status": "positive", "laterality": None}
        self.mentions = []
        for report in reports:
            mentions = label_mentions(report or "")
            is_normal = aggregate(mentions).get("No Finding") == "positive"
            self.mentions.append([m for m in mentions if m["label"] != "No Finding"] + [normal] * is_normal)
        self.sentences = [{normalize_sentence(s) for s in split_sentences(r or "")} for r in reports]
        self.n = len(reports)
        self._by_mention: dict = {}  # (label, present, laterality) -> rows stating it
        self._by_sentence: dict = {}  # normalised sentence -> rows stating it
        for i, (mentions, sentences) in enumerate(zip(self.mentions, self.sentences)):
            for m in mentions:
                self._by_mention.setdefault((m["label"], m["status"] != "negative", m["laterality"]), set()).add(i)
            for sentence in sentences:
                self._by_sentence.setdefault(sentence, set()).add(i)
        self._memo: dict = {}

    def states(self, i: int, findings: list, description: str) -> float:
        """The fraction of the description's findings (or, without findings, of its sentences) report i states."""
        if findings:
            return sum(self._states_finding(i, f) for f in findings) / len(findings)
        wanted = {normalize_sentence(s) for s in split_sentences(description)}
        return len(wanted & self.sentences[i]) / len(wanted) if wanted else 0.0

    def _states_finding(self, i: int, finding: dict) -> bool:
        present = finding["status"] != "negative"
        for m in self.mentions[i]:
            if m["label"] != finding["label"] or (m["status"] != "negative") != present:
                continue
            side, other = finding.get("laterality"), m["laterality"]
            if side is None or other is None or side == other or "bilateral" in (side, other):
                return True
        return False

    def predictions(self, findings: list, description: str) -> np.ndarray:
        """`states(i, findings, description)` for every row i at once, as a float64 array (memoised)."""
        key = (tuple((f["label"], f["status"] != "negative", f.get("laterality")) for f in findings), description)
        if key not in self._memo:
            total = np.zeros(self.n)
            if findings:
                for label, present, side in key[0]:
                    total[list(self._finding_rows(label, present, side))] += 1
                total /= len(findings)
            else:
                wanted = {normalize_sentence(s) for s in split_sentences(description)}
                for sentence in wanted:
                    total[list(self._by_sentence.get(sentence, ()))] += 1
                total /= max(1, len(wanted))
            self._memo[key] = total
        return self._memo[key]

    def _finding_rows(self, label: str, present: bool, side: Optional[str]) -> set:
        """Rows with a mention of this label and presence on a compatible side (as `_states_finding` decides)."""
        rows: set = set()
        for (m_label, m_present, m_side), found in self._by_mention.items():
            if m_label == label and m_present == present and (
                    side is None or m_side is None or side == m_side or "bilateral" in (side, m_side)):
                rows |= found
        return rows


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as `auroc` ranks), for all rows at once."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(scores)] - 1
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends) / 2 + 1, ends - starts + 1)
    return ranks


def score_features(features: list[dict], activations, index: ReportIndex, min_support: int = MIN_SUPPORT) -> None:
    """Write each described feature's detection AUROC into `feature["score"]`, its held-out precision into
    `feature["precision"]` and the number of held-out rows it fires on into `feature["score_support"]`; score and
    precision are None when it fires, or is silent, on fewer than `min_support`.

    `activations` is a dense `(n, d_sae)` array, or the firing pairs `(rows, feats)` of `n = index.n` rows: the
    per-feature work is a sum over its firing rows of ranks computed once per distinct description."""
    if isinstance(activations, tuple):
        rows, feats = (np.asarray(a, dtype=np.int64) for a in activations)
    else:
        rows, feats = np.nonzero(np.asarray(activations) > 0)
    n = index.n
    d_sae = max((f["id"] for f in features), default=-1) + 1
    order = np.argsort(feats, kind="stable")
    rows = rows[order]
    bounds = np.r_[0, np.cumsum(np.bincount(feats, minlength=d_sae))]
    ranks: dict = {}
    for feature in features:
        fid = feature["id"]
        fired = rows[bounds[fid] : bounds[fid + 1]]
        n_pos = len(fired)
        feature["score_support"] = n_pos
        if not feature["description"] or min(n_pos, n - n_pos) < max(1, min_support):
            feature["score"] = feature["precision"] = None
            continue
        predicted = index.predictions(feature["findings"], feature["description"])
        key = id(predicted)
        if key not in ranks:
            ranks[key] = _average_ranks(predicted)
        rank_sum = ranks[key][fired].sum()
        feature["score"] = float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))
        feature["precision"] = float(predicted[fired].mean())


PRECISION_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FLOOR_GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)
PRECISION_SUPPORT = 3  # held-out rows above a feature's floor for its precision to count as measured


def _stated(mentions: list) -> set:
    return {(m["label"], m["laterality"] or "") for m in mentions if m["status"] != "negative"}


def _fbeta(features: dict, rows: list, truth: list, min_score: Optional[float], min_precision: Optional[float],
           beta: float) -> float:
    """F-beta of the composed reports' stated findings (observation and side, No Finding included) against the
    references'."""
    from composition_saerad import compose_report

    reports = [compose_report(row, features, min_feature_score=min_score,
                              min_feature_precision=min_precision)["findings"] for row in rows]
    tp = n_written = n_true = 0
    for report, mentions, reference in zip(reports, ReportIndex(reports).mentions, truth):
        written = _stated(mentions) if report else set()  # an empty report states nothing, not No Finding
        tp, n_written, n_true = tp + len(written & reference), n_written + len(written), n_true + len(reference)
    p, r = tp / max(1, n_written), tp / max(1, n_true)
    return (1 + beta**2) * p * r / max(1e-9, beta**2 * p + r)


def choose_precision_threshold(features: list[dict], activations: np.ndarray, index: ReportIndex,
                               min_score: Optional[float], grid: Sequence[float] = PRECISION_GRID,
                               beta: float = 0.5) -> tuple[float, dict]:
    """The lowest precision threshold of `grid` whose composed held-out reports best match the references' stated
    findings by F-beta (`beta` 0.5: precision counts twice), and the F-beta of every threshold. Features below
    `min_score` never write, as in the composer."""
    truth, by_id, rows = [_stated(m) for m in index.mentions], {f["id"]: f for f in features}, activations.tolist()
    fbeta = {t: _fbeta(by_id, rows, truth, min_score, t, beta) for t in grid}
    return max(grid, key=lambda t: (round(fbeta[t], 6), -t)), fbeta


def activation_floor(acts: np.ndarray, states: np.ndarray, target: float, min_rows: int) -> Optional[float]:
    """The lowest activation at and above which the rows' mean `states` (how much of the description their reports
    state) reaches `target`, over at least `min_rows` rows; None when no activation does."""
    order = np.argsort(-acts, kind="stable")
    cumulative = np.cumsum(states[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero((cumulative >= target - 1e-9) & (np.arange(1, len(order) + 1) >= min_rows))[0]
    return float(acts[order][ok[-1]]) if len(ok) else None


def fit_floors(features: list[dict], activations: np.ndarray, index: ReportIndex, targets: Sequence[float],
               min_rows: int = MIN_SUPPORT) -> dict:
    """{target: {feature id: floor or None}} on the rows of `activations` (the training rows): per described feature,
    the activation under which its firing rows' reports no longer state its description with precision `target`."""
    floors: dict = {t: {} for t in targets}
    for feature in features:
        if not feature["description"]:
            continue
        column = activations[:, feature["id"]]
        rows = np.nonzero(column > 0)[0]
        states = np.array([index.states(i, feature["findings"], feature["description"]) for i in rows])
        for t in targets:
            floors[t][feature["id"]] = activation_floor(column[rows], states, t, min_rows) if len(rows) else None
    return floors


def apply_floors(features: list[dict], floors: dict, activations: np.ndarray, index: ReportIndex,
                 min_rows: int = PRECISION_SUPPORT) -> None:
    """Write each feature's floor into `feature["min_activation"]` and its held-out precision above the floor into
    `feature["precision"]` (None without a floor or with fewer than `min_rows` held-out rows above it)."""
    for feature in features:
        floor = floors.get(feature["id"])
        feature["min_activation"], feature["precision"] = floor, None
        if floor is None or not feature["description"]:
            continue
        rows = np.nonzero(activations[:, feature["id"]] >= max(floor, 1e-12))[0]
        if len(rows) >= min_rows:
            feature["precision"] = float(np.mean([index.states(i, feature["findings"], feature["description"])
                                                  for i in rows]))


def choose_floors(features: list[dict], train: tuple, held: tuple, min_score: Optional[float],
                  targets: Sequence[float] = FLOOR_GRID, precisions: Sequence[float] = PRECISION_GRID,
                  beta: float = 1.0) -> tuple[tuple, dict]:
    """Per-feature activation floors fitted on the training rows (`train`: activations, ReportIndex) at each target
    precision, and a held-out precision threshold; the pair whose composed held-out reports (`held`) score the best
    F-beta, written into the features (`apply_floors`). Returns ((target, threshold), F-beta of every pair)."""
    floors = fit_floors(features, *train, targets)
    truth, rows = [_stated(m) for m in held[1].mentions], held[0].tolist()
    fbeta = {}
    for t in targets:
        apply_floors(features, floors[t], *held)
        by_id = {f["id"]: f for f in features}
        for q in precisions:
            fbeta[(t, q)] = _fbeta(by_id, rows, truth, min_score, q, beta)
    best = max(fbeta, key=lambda k: (round(fbeta[k], 6), -k[0], -k[1]))
    apply_floors(features, floors[best[0]], *held)
    return best, fbeta
