"""The report splitter and de-identification cleaner of the labeler and the metrics: the remote code's (one owner).

In the toolkit this file re-exports them from `composition_saerad`; `saerad push --metrics` ships, in its place, the
functions' own source cut from `composition_saerad.py` (stdlib only), so a metric Space needs neither torch nor saerad.
"""

from composition_saerad import normalize_deid, split_sentences

__all__ = ["normalize_deid", "split_sentences"]
