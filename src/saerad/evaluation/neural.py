"""Optional neural clinical metrics: CheXbert F1 (`f1chexbert`) and RadGraph F1 (`radgraph`), used only where the
packages and their weights are already on the machine; otherwise a `LookupError` says exactly what is missing."""

from __future__ import annotations

from typing import Sequence

from ..errors import first_line


def _load(package: str, factory, weights: str):
    try:
        module = __import__(package)
    except ImportError:
        raise LookupError(f"needs the `{package}` package (pip install {package})") from None
    try:
        return factory(module)
    except Exception as err:  # the packages raise hub, file and torch errors alike when weights are absent
        raise LookupError(f"needs the {weights} weights in the local cache; loading them failed: "
                          f"{first_line(err)}") from None


def chexbert_f1(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Micro/macro F1 over 14 and 5 observations from CheXbert labels (keys as `chexpert_f1`, prefixed `chexbert_`)."""
    scorer = _load("f1chexbert", lambda m: m.F1CheXbert(), "CheXbert (StanfordAIMI RRG scorers chexbert.pth)")
    _, _, report_14, report_5 = scorer(hyps=list(predictions), refs=list(references))
    return {"chexbert_micro_f1_14": report_14["micro avg"]["f1-score"],
            "chexbert_macro_f1_14": report_14["macro avg"]["f1-score"],
            "chexbert_micro_f1_5": report_5["micro avg"]["f1-score"],
            "chexbert_macro_f1_5": report_5["macro avg"]["f1-score"]}


def radgraph_f1(predictions: Sequence[str], references: Sequence[str], reward_level: str = "partial") -> dict:
    """RadGraph F1 (entity and relation overlap) at the given reward level (key `radgraph_f1`)."""
    scorer = _load("radgraph", lambda m: m.F1RadGraph(reward_level=reward_level), "RadGraph")
    score = scorer(hyps=list(predictions), refs=list(references))[0]
    return {"radgraph_f1": float(score if not isinstance(score, (tuple, list)) else score[-1])}
