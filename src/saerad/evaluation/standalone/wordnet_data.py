"""WordNet for METEOR without a download: NLTK's own data if present, else Debian's `wordnet-base` +
`wordnet-sense-index` files copied into an NLTK data folder with the `lexnames` file that NLTK expects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet 3.0 lexicographer files: number, name, syntactic category (lexnames(5WN)).
LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1", "noun.feeling 1",
    "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1", "noun.quantity 1",
    "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1", "verb.body 2",
    "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2", "verb.consumption 2",
    "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2",
    "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)
MISSING = ("METEOR needs WordNet, which is not installed: `apt-get install wordnet-base wordnet-sense-index` "
           "(Debian/Ubuntu; `make test` does this when run as root) or `python -m nltk.downloader wordnet`")


def install_from_debian(folder: Path) -> bool:
    """Copy Debian's WordNet files into the NLTK data `folder`; False when they are not on this machine."""
    if not (DEBIAN_WORDNET / "data.noun").exists():
        return False
    target = Path(folder) / "corpora" / "wordnet"
    if (target / "lexnames").exists():
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"wordnet.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(DEBIAN_WORDNET, tmp)
    (tmp / "lexnames").write_text("".join(f"{i:02d}\t{name}\n" .replace(" ", "\t") for i, name in enumerate(LEXNAMES)))
    if target.exists():  # a copy left without its lexnames by an older version
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)  # atomic; another process that finished first wins, and its copy is the same
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def require_wordnet(folder: Path):
    """The NLTK WordNet reader, from NLTK's own data or Debian's files put in `folder`; `LookupError` naming the fix."""
    import nltk

    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        if not install_from_debian(folder):
            raise LookupError(MISSING) from None
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet
