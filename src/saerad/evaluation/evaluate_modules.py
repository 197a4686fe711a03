"""The `evaluate` wrapper shared by the module scripts in `modules/<name>/<name>.py`."""

from __future__ import annotations

import datasets
import evaluate

from . import metrics
from .wordnet import MISSING, wordnet_available

DESCRIPTIONS = {
    "bleu": "Corpus BLEU-1..4 on lower-cased, punctuation-free tokens (report-generation convention).",
    "rouge": "ROUGE-L F-measure (beta 1.2, pycocoevalcap convention), averaged over reports.",
    "meteor": "METEOR with WordNet synonyms (nltk). Without WordNet it returns nothing and says why.",
    "cider": "CIDEr-D (sigma 6, clipped, x10) with document frequencies from the references.",
    "chexpert_f1": ("CheXpert-style F1 (micro/macro over 14 and top 5, per observation) from saerad's offline "
                    "rule-based labeler, not CheXbert."),
}
_KWARGS = """
Args:
    predictions: generated reports (strings).
    references: reference reports (strings), one per prediction.
Returns: a dict of floats keyed as the saerad.evaluation.metrics function of the same name documents.
"""


def make_metric(name: str) -> type:
    """An `evaluate.Metric` subclass computing saerad's metric `name`."""
    function = getattr(metrics, name)

    def _info(self):
        return evaluate.MetricInfo(
            description=DESCRIPTIONS[name], inputs_description=_KWARGS,
            citation="saerad: SAE-Rad, interpretable chest X-ray report generation (arXiv 2410.03334).",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, **kwargs):
        if name == "meteor" and not wordnet_available():
            evaluate.logging.get_logger(__name__).warning(MISSING)
            return {}
        return function(predictions, references, **kwargs)

    class_name = "".join(part.capitalize() for part in name.split("_"))
    return type(class_name, (evaluate.Metric,), {"_info": _info, "_compute": _compute, "__doc__": DESCRIPTIONS[name]})
