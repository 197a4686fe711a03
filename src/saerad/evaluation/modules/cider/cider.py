"""saerad `cider` metric as an `evaluate` module (loads offline from this folder)."""

import datasets
import evaluate

from saerad.evaluation import metrics

_DESCRIPTION = "CIDEr-D (sigma 6, clipped, x10) with document frequencies from the references."
_CITATION = "saerad: SAE-Rad, interpretable chest X-ray report generation (arXiv 2410.03334)."
_KWARGS = """
Args:
    predictions: generated reports (strings).
    references: reference reports (strings), one per prediction.
Returns: a dict of floats keyed as saerad.evaluation.metrics.cider documents.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Cider(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                         "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return metrics.cider(predictions, references)
