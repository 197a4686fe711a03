"""BLEU-1..4 of generated radiology reports as report-generation papers compute it: an `evaluate` metric."""

import evaluate

# evaluate copies next to the script only the sibling files it imports itself (and reads a comment on an import
# line as a URL to download): hence every file, and no comments here.
from .chexpert_labeler import label_report
from .chexpert_phrases import OBSERVATIONS
from .metric_info import SAERAD_CITATION, report_metric_info
from .report_metrics import score
from .report_text import normalize_deid

_DESCRIPTION = ("Corpus BLEU-1..4 (Papineni et al. 2002) on lower-cased tokens without punctuation or "
                "de-identification tokens; brevity penalty from the summed lengths (pycocoevalcap convention).")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): one reference report per prediction.
Returns:
    a dict with `bleu_1`, `bleu_2`, `bleu_3`, `bleu_4` (floats in [0, 1]).
"""
_CITATION = SAERAD_CITATION + """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={ACL}, year={2002}
}
"""


class Bleu(evaluate.Metric):
    __doc__ = _DESCRIPTION

    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        return score("bleu", predictions, references)
