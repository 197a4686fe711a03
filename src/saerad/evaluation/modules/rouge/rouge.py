"""ROUGE-L of generated radiology reports as report-generation papers compute it: an `evaluate` metric."""

import evaluate

# evaluate copies next to the script only the sibling files it imports itself (and reads a comment on an import
# line as a URL to download): hence every file, and no comments here.
from .chexpert_labeler import label_report
from .chexpert_phrases import OBSERVATIONS
from .metric_info import SAERAD_CITATION, report_metric_info
from .report_metrics import score
from .report_text import normalize_deid

_DESCRIPTION = ("ROUGE-L F-measure (Lin 2004) with beta = 1.2 per report, averaged (the pycocoevalcap convention), on "
                "lower-cased tokens without punctuation or de-identification tokens.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): one reference report per prediction.
Returns:
    a dict with `rouge_l` (float in [0, 1]).
"""
_CITATION = SAERAD_CITATION + """\
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}
}
"""


class Rouge(evaluate.Metric):
    __doc__ = _DESCRIPTION

    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        return score("rouge", predictions, references)
