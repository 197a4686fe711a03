"""Offline rule-based CheXpert-style labeler: the standalone `saerad.evaluation.standalone.chexpert_labeler`, which the
metric Spaces ship as it is (one owner), re-exported here."""

from ..evaluation.standalone import chexpert_phrases as phrases  # noqa: F401
from ..evaluation.standalone.chexpert_labeler import (  # noqa: F401
    EXTRA_OBSERVATIONS,
    OBSERVATIONS,
    SECTION_OF,
    TOP5,
    aggregate,
    is_normal,
    label_mentions,
    label_report,
    label_sentence,
)

__all__ = ["EXTRA_OBSERVATIONS", "OBSERVATIONS", "SECTION_OF", "TOP5", "aggregate", "is_normal", "label_mentions",
           "label_report", "label_sentence"]
