"""CIDEr-D of generated radiology reports as report-generation papers compute it: an `evaluate` metric."""

import evaluate

# evaluate copies next to the script only the sibling files it imports itself (and reads a comment on an import
# line as a URL to download): hence every file, and no comments here.
from .chexpert_labeler import label_report
from .chexpert_phrases import OBSERVATIONS
from .metric_info import SAERAD_CITATION, report_metric_info
from .report_metrics import score
from .report_text import normalize_deid

_DESCRIPTION = ("CIDEr-D (Vedantam et al. 2015): n-grams 1..4 weighted by TF-IDF with document frequencies from the "
                "references, clipped counts, length penalty sigma = 6, times 10; on lower-cased tokens without "
                "punctuation or de-identification tokens.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): one reference report per prediction.
Returns:
    a dict with `cider` (float, 0 to 10).
"""
_CITATION = SAERAD_CITATION + """\
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi}, booktitle={CVPR}, year={2015}
}
"""


class Cider(evaluate.Metric):
    __doc__ = _DESCRIPTION

    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        return score("cider", predictions, references)
