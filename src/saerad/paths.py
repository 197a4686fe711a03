"""Where saerad keeps what it builds at run time (never in the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$SAERAD_CACHE`, else `$XDG_CACHE_HOME/saerad`, else `~/.cache/saerad`, joined with `parts` and created."""
    root = os.environ.get("SAERAD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "saerad")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
