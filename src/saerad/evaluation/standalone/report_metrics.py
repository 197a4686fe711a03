"""Report-generation metrics as plain functions, each built from per-report statistics so that bootstrap
confidence intervals and paired tests resample reports, not scores.

Conventions of the report-generation literature (R2Gen and after, via pycocoevalcap): text lower-cased with
punctuation removed before BLEU (corpus level, closest reference length), ROUGE-L (beta = 1.2), METEOR and
CIDEr-D (sigma = 6, clipped, x10); CheXpert F1 with uncertain counted as positive unless asked otherwise.

Standalone (numpy, nltk for METEOR, its sibling files): `saerad evaluate` and the metric Spaces run this very file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

from .chexpert_labeler import OBSERVATIONS, TOP5, label_report
from .report_text import normalize_deid


def tokenize(text: str) -> list[str]:
    """Lower-case, drop de-identification tokens and punctuation, split on spaces (PTB-style as in pycocoevalcap)."""
    text = normalize_deid(text or "").lower()
    return re.sub(r"[^a-z0-9\s]", " ", text).split()


def check(predictions: Sequence[str], references: Sequence[str]) -> None:
    """`ValueError` unless there are as many predictions as references, and some."""
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not len(predictions):
        raise ValueError("no predictions to score")


def _ngrams(tokens: list, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class Bleu:
    """Corpus BLEU-1..4 (Papineni et al.; brevity penalty from the summed lengths)."""

    name, keys = "bleu", ("bleu_1", "bleu_2", "bleu_3", "bleu_4")

    @staticmethod
    def stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        rows = []
        for pred, ref in zip(predictions, references):
            hyp, refs = tokenize(pred), tokenize(ref)
            row = [len(hyp), len(refs)]
            for n in range(1, 5):
                h, r = _ngrams(hyp, n), _ngrams(refs, n)
                row += [sum(min(c, r[g]) for g, c in h.items()), max(len(hyp) - n + 1, 0)]
            rows.append(row)
        return np.asarray(rows, dtype=np.float64)

    @staticmethod
    def aggregate(stats: np.ndarray) -> dict:
        total = stats.sum(axis=0)
        hyp_len, ref_len = total[0], total[1]
        bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
        out, log_sum = {}, 0.0
        for n in range(1, 5):
            matches, count = total[2 * n], total[2 * n + 1]
            if matches == 0 or count == 0:
                log_sum = -math.inf
            else:
                log_sum += math.log(matches / count)
            out[f"bleu_{n}"] = bp * math.exp(log_sum / n) if log_sum > -math.inf else 0.0
        return out


def _lcs(a: list, b: list) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


class RougeL:
    """ROUGE-L F-measure with beta = 1.2 per report (pycocoevalcap), averaged."""

    name, keys, beta = "rouge", ("rouge_l",), 1.2

    @classmethod
    def stats(cls, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        scores = []
        for pred, ref in zip(predictions, references):
            hyp, refs = tokenize(pred), tokenize(ref)
            lcs = _lcs(hyp, refs)
            if lcs == 0:
                scores.append(0.0)
                continue
            p, r = lcs / len(hyp), lcs / len(refs)
            scores.append((1 + cls.beta**2) * p * r / (r + cls.beta**2 * p))
        return np.asarray(scores, dtype=np.float64)[:, None]

    @staticmethod
    def aggregate(stats: np.ndarray) -> dict:
        return {"rouge_l": float(stats[:, 0].mean())}


class CiderD:
    """CIDEr-D (Vedantam et al.; sigma 6, clipped counts, x10) with document frequencies from the references."""

    name, keys, sigma = "cider", ("cider",), 6.0

    @classmethod
    def stats(cls, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        hyps, refs = [tokenize(p) for p in predictions], [tokenize(r) for r in references]
        log_n = math.log(float(len(refs)))
        scores = np.zeros(len(hyps))
        for n in range(1, 5):
            df = Counter(g for r in refs for g in set(_ngrams(r, n)))

            def vec(tokens: list) -> tuple[dict, float]:
                counts = _ngrams(tokens, n)
                v = {g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in counts.items()}
                return v, math.sqrt(sum(x * x for x in v.values()))

            for i, (h, r) in enumerate(zip(hyps, refs)):
                vh, nh = vec(h)
                vr, nr = vec(r)
                dot = sum(min(x, vr[g]) * vr[g] for g, x in vh.items() if g in vr)
                if nh and nr:
                    penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * cls.sigma**2))
                    scores[i] += penalty * dot / (nh * nr) / 4.0 * 10.0
        return scores[:, None]

    @staticmethod
    def aggregate(stats: np.ndarray) -> dict:
        return {"cider": float(stats[:, 0].mean())}


class Meteor:
    """METEOR (nltk, WordNet synonyms) per report, averaged; `wordnet` is NLTK's reader (see `wordnet_data`)."""

    name, keys = "meteor", ("meteor",)

    @staticmethod
    def stats(predictions: Sequence[str], references: Sequence[str], wordnet=None) -> np.ndarray:
        from nltk.translate.meteor_score import single_meteor_score

        if wordnet is None:
            from nltk.corpus import wordnet
        return np.asarray([single_meteor_score(tokenize(r), tokenize(p), wordnet=wordnet)
                           for p, r in zip(predictions, references)], dtype=np.float64)[:, None]

    @staticmethod
    def aggregate(stats: np.ndarray) -> dict:
        return {"meteor": float(stats[:, 0].mean())}


def _slug(observation: str) -> str:
    return observation.lower().replace(" ", "_")


class ChexpertF1:
    """Micro/macro F1 over the 14 CheXpert observations and the top 5, plus per observation, from the rule-based
    labeler applied to prediction and reference (uncertain counts as positive unless `uncertain_as_positive=False`)."""

    name = "chexpert_f1"
    keys = ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5", *(f"f1_{_slug(o)}" for o in OBSERVATIONS))

    @staticmethod
    def binarize(text: str, uncertain_as_positive: bool = True) -> np.ndarray:
        accepted = ("positive", "uncertain") if uncertain_as_positive else ("positive",)
        labels = label_report(text or "")
        return np.asarray([labels.get(o) in accepted for o in OBSERVATIONS], dtype=np.float64)

    @classmethod
    def stats(cls, predictions: Sequence[str], references: Sequence[str], uncertain_as_positive: bool = True):
        p = np.stack([cls.binarize(t, uncertain_as_positive) for t in predictions])
        r = np.stack([cls.binarize(t, uncertain_as_positive) for t in references])
        return np.concatenate([p * r, p * (1 - r), (1 - p) * r], axis=1)  # tp | fp | fn per observation

    @staticmethod
    def aggregate(stats: np.ndarray) -> dict:
        k = len(OBSERVATIONS)
        tp, fp, fn = (stats[:, i * k : (i + 1) * k].sum(axis=0) for i in range(3))
        denom = 2 * tp + fp + fn
        per = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)  # zero_division = 0, as sklearn
        top5 = [OBSERVATIONS.index(o) for o in TOP5]

        def micro(idx):
            d = (2 * tp[idx] + fp[idx] + fn[idx]).sum()
            return float(2 * tp[idx].sum() / d) if d else 0.0

        out = {"micro_f1_14": micro(slice(None)), "macro_f1_14": float(per.mean()),
               "micro_f1_5": micro(top5), "macro_f1_5": float(per[top5].mean())}
        out.update({f"f1_{_slug(o)}": float(per[i]) for i, o in enumerate(OBSERVATIONS)})
        return out


METRICS = {m.name: m for m in (Bleu, RougeL, Meteor, CiderD, ChexpertF1)}


def score(name: str, predictions: Sequence[str], references: Sequence[str], **kwargs) -> dict:
    """Metric `name` of METRICS on the reports (keyword arguments go to its `stats`)."""
    check(predictions, references)
    metric = METRICS[name]
    return metric.aggregate(metric.stats(predictions, references, **kwargs))
