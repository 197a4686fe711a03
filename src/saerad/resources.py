"""Files saerad ships beside its code: the model card template and the Space folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_DATA = "_data"  # where the wheel carries the repository's top-level model_card.md and spaces/
# The remote code: the repository's root modules that a model folder carries (installed as top-level modules).
REMOTE_CODE = ("composition_saerad.py", "configuration_saerad.py", "image_processing_saerad.py",
               "localization_saerad.py", "modeling_saerad.py", "pipeline_saerad.py")


def resource(name: str) -> Path:
    """`model_card.md` or `spaces`: the installed wheel's package data, else (an editable checkout, where the
    package is `src/saerad`) the repository's top level."""
    packaged = resources.files("saerad").joinpath(PACKAGE_DATA, name)
    if packaged.is_file() or packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.exists():
        return checkout
    raise FileNotFoundError(f"saerad's {name} is missing from this installation (reinstall saerad)")
