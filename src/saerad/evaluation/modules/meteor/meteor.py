"""saerad `meteor` metric as an `evaluate` module (loads offline from this folder)."""

import datasets
import evaluate

from saerad.evaluation import metrics

_DESCRIPTION = "METEOR with WordNet synonyms (nltk). Without WordNet it returns nothing and says why."
_CITATION = "saerad: SAE-Rad, interpretable chest X-ray report generation (arXiv 2410.03334)."
_KWARGS = """
Args:
    predictions: generated reports (strings).
    references: reference reports (strings), one per prediction.
Returns: a dict of floats keyed as saerad.evaluation.metrics.meteor documents.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Meteor(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                         "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        from saerad.evaluation.wordnet import MISSING, wordnet_available

        if not wordnet_available():
            evaluate.logging.get_logger(__name__).warning(MISSING)
            return {}
        return metrics.meteor(predictions, references)
