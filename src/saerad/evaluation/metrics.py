"""Report-generation metrics as plain functions. The computations live once, in the standalone
`standalone/report_metrics.py` that the metric Spaces ship; this module adds saerad's errors and WordNet cache."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from .standalone import report_metrics
from .standalone.report_metrics import Bleu, ChexpertF1, CiderD, RougeL, tokenize

__all__ = ["METRICS", "Bleu", "ChexpertF1", "CiderD", "Meteor", "RougeL", "bleu", "chexpert_f1", "cider", "meteor",
           "rouge", "tokenize"]


class Meteor(report_metrics.Meteor):
    """METEOR with WordNet found (or built from Debian's files) in saerad's cache; refuses to run without it."""

    @staticmethod
    def stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        from .wordnet import require_wordnet

        return report_metrics.Meteor.stats(predictions, references, wordnet=require_wordnet())


METRICS = {**report_metrics.METRICS, "meteor": Meteor}


def _score(name: str, predictions: Sequence[str], references: Sequence[str], **kwargs) -> dict:
    try:
        report_metrics.check(predictions, references)
    except ValueError as err:
        raise UserError(str(err)) from None
    metric = METRICS[name]
    return metric.aggregate(metric.stats(predictions, references, **kwargs))


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU-1..4 (keys `bleu_1`..`bleu_4`)."""
    return _score("bleu", predictions, references)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """ROUGE-L (key `rouge_l`)."""
    return _score("rouge", predictions, references)


def meteor(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """METEOR (key `meteor`); raises `LookupError` naming the fix when WordNet is missing."""
    return _score("meteor", predictions, references)


def cider(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """CIDEr-D (key `cider`)."""
    return _score("cider", predictions, references)


def chexpert_f1(predictions: Sequence[str], references: Sequence[str], uncertain_as_positive: bool = True) -> dict:
    """CheXpert-style F1 (keys `micro_f1_14`, `macro_f1_14`, `micro_f1_5`, `macro_f1_5`, `f1_<observation>`)."""
    return _score("chexpert_f1", predictions, references, uncertain_as_positive=uncertain_as_positive)
