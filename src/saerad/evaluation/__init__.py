"""Metrics (plain functions and `evaluate` modules), baselines, confidence intervals and the benchmark runner."""

from __future__ import annotations

from ..errors import UserError
from .metric_spaces import METRIC_NAMES
from .metrics import bleu, chexpert_f1, cider, meteor, rouge

__all__ = ["METRIC_NAMES", "bleu", "chexpert_f1", "cider", "load_metric", "meteor", "rouge"]


def load_metric(name: str):
    """The `evaluate` module of a saerad metric, loaded offline from its folder as the metric Space ships it."""
    import evaluate

    from .metric_spaces import local_module

    if name not in METRIC_NAMES:
        raise UserError(f"unknown metric {name!r}; saerad ships {list(METRIC_NAMES)}")
    return evaluate.load(str(local_module(name)))
