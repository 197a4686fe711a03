"""CheXpert-style clinical F1 of generated radiology reports: an `evaluate` metric (no saerad, no torch)."""

import evaluate

# evaluate copies next to the script only the sibling files it imports itself (and reads a comment on an import
# line as a URL to download): hence every file, and no comments here.
from .chexpert_labeler import label_report
from .chexpert_phrases import OBSERVATIONS
from .metric_info import SAERAD_CITATION, report_metric_info
from .report_metrics import score
from .report_text import normalize_deid

_DESCRIPTION = ("CheXpert-style F1: saerad's offline rule-based labeler (CheXpert's 14 observations, negation and "
                "uncertainty, not CheXbert) labels each prediction and its reference; micro and macro F1 over the 14 "
                "observations and over the top 5 (atelectasis, cardiomegaly, consolidation, edema, pleural effusion), "
                "and F1 per observation. Uncertain mentions count as positive unless uncertain_as_positive=False.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): one reference report per prediction.
    uncertain_as_positive (bool, defaults to True): count uncertain mentions as positive.
Returns:
    a dict with `micro_f1_14`, `macro_f1_14`, `micro_f1_5`, `macro_f1_5` and `f1_<observation>` (floats in
    [0, 1]; an observation absent from predictions and references scores 0).
"""
_CITATION = SAERAD_CITATION + """\
@inproceedings{irvin2019chexpert,
  title={CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison},
  author={Irvin, Jeremy and Rajpurkar, Pranav and others}, booktitle={AAAI}, year={2019}
}
"""


class ChexpertF1(evaluate.Metric):
    __doc__ = _DESCRIPTION

    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, uncertain_as_positive=True):
        return score("chexpert_f1", predictions, references, uncertain_as_positive=uncertain_as_positive)
