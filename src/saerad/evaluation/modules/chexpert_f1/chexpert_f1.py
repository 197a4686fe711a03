"""saerad `chexpert_f1` metric as an `evaluate` module (loads offline from this folder)."""

import datasets
import evaluate

from saerad.evaluation import metrics

_DESCRIPTION = ("CheXpert-style F1 (micro/macro over 14 and top 5, per observation) "
                "from saerad's offline rule-based labeler, not CheXbert.")
_CITATION = "saerad: SAE-Rad, interpretable chest X-ray report generation (arXiv 2410.03334)."
_KWARGS = """
Args:
    predictions: generated reports (strings).
    references: reference reports (strings), one per prediction.
Returns: a dict of floats keyed as saerad.evaluation.metrics.chexpert_f1 documents.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ChexpertF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                         "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, uncertain_as_positive=True):
        return metrics.chexpert_f1(predictions, references, uncertain_as_positive=uncertain_as_positive)
