"""METEOR of generated radiology reports as report-generation papers compute it: an `evaluate` metric."""

from pathlib import Path

import evaluate
import nltk

# evaluate copies next to the script only the sibling files it imports itself (and reads a comment on an import
# line as a URL to download): hence every file, and no comments here.
from .chexpert_labeler import label_report
from .chexpert_phrases import OBSERVATIONS
from .metric_info import SAERAD_CITATION, report_metric_info
from .report_metrics import score
from .report_text import normalize_deid
from .wordnet_data import require_wordnet

_DESCRIPTION = ("METEOR (Banerjee and Lavie 2005; nltk, WordNet synonyms) per report, averaged, on lower-cased tokens "
                "without punctuation or de-identification tokens. Needs WordNet: NLTK's own data, or Debian's "
                "wordnet-base and wordnet-sense-index packages; without it the metric returns {} and says why.")
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): one reference report per prediction.
Returns:
    a dict with `meteor` (float in [0, 1]), or {} when WordNet is missing.
"""
_CITATION = SAERAD_CITATION + """\
@inproceedings{banerjee2005meteor,
  title={METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with Human Judgments},
  author={Banerjee, Satanjeev and Lavie, Alon}, booktitle={ACL Workshop on Evaluation Measures}, year={2005}
}
"""


class Meteor(evaluate.Metric):
    __doc__ = _DESCRIPTION

    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        try:  # WordNet from NLTK's data, else Debian's files converted once into evaluate's cache
            wordnet = require_wordnet(Path(evaluate.config.HF_EVALUATE_CACHE) / "nltk_data")
        except LookupError as err:
            evaluate.logging.get_logger(__name__).warning(str(err))
            return {}
        return score("meteor", predictions, references, wordnet=wordnet)
