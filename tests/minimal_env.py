"""A site-packages folder holding only some distributions and what they require: "an environment without saerad"."""

import os
import re
from importlib import metadata
from pathlib import Path


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue  # optional extras are not installed by a plain `pip install NAME`
        names.append(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
    return names


def closure(roots: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `roots` need, transitively."""
    seen, todo, dists = set(), list(roots), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement only for another platform or Python
        dists.append(dist)
        todo.extend(_requirement_names(dist))
    return dists


def make_site(target: Path, roots: list[str]) -> Path:
    """Symlink the top-level entries of the closure of `roots` (code and .dist-info) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in closure(roots):
        base = Path(dist.locate_file(""))
        for file in dist.files or []:
            top = Path(file).parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            src, dst = base / top, target / top
            if src.exists() and not dst.exists():
                os.symlink(src, dst)
    return target
