"""WordNet for METEOR in saerad's cache (the standalone `wordnet_data`, which the meteor Space ships, does the work)."""

from __future__ import annotations

from ..paths import cache_dir
from .standalone.wordnet_data import MISSING
from .standalone.wordnet_data import require_wordnet as _require_wordnet

__all__ = ["MISSING", "require_wordnet", "wordnet_available"]


def require_wordnet():
    """The NLTK WordNet reader, from NLTK's own data or Debian's files; `LookupError` naming the fix otherwise."""
    return _require_wordnet(cache_dir("nltk_data"))


def wordnet_available() -> bool:
    """Whether METEOR can run here."""
    try:
        require_wordnet()
        return True
    except LookupError:
        return False
