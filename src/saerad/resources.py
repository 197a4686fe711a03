"""Files saerad ships beside its code: the model card template, the Space folder, the remote code's file names and the
bundled demo backbones (`saerad:phantom-resnet`, `saerad:phantom-dino`, in saerad/assets)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from .errors import MissingInput

PACKAGE_DATA = "_data"  # where the wheel carries the repository's top-level model_card.md and spaces/
# The remote code: the repository's root modules that a model folder carries (installed as top-level modules).
REMOTE_CODE = ("composition_saerad.py", "configuration_saerad.py", "familiarity_saerad.py",
               "image_processing_saerad.py", "localization_saerad.py", "modeling_saerad.py", "pipeline_saerad.py")


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


BUNDLED = "saerad:"  # `--backbone saerad:NAME`: a backbone saerad ships in saerad/assets (the demo's)


def _assets() -> Path:
    return Path(str(resources.files("saerad").joinpath("assets")))


def bundled_backbones() -> list[str]:
    """The `saerad:NAME` of every backbone bundled with this installation."""
    return sorted(f"{BUNDLED}{p.name}" for p in _assets().iterdir() if (p / "config.json").is_file())


def resolve_backbone(name: str) -> str:
    """`saerad:NAME` -> the folder of that bundled backbone (editable checkout or installed wheel); any other name
    (a folder, a hub id) as it is."""
    if not name.startswith(BUNDLED):
        return name
    folder = _assets() / name[len(BUNDLED):]
    if "/" in name[len(BUNDLED):] or not (folder / "config.json").is_file():
        raise MissingInput(f"backbone {name}: saerad bundles no such backbone; expected one of "
                           f"{', '.join(bundled_backbones())}")
    return str(folder)


def bundled_name(backbone: str) -> Optional[str]:
    """The `saerad:NAME` that loads `backbone` when it is a bundled backbone (by that name or by its folder)."""
    if backbone.startswith(BUNDLED):
        return f"{BUNDLED}{Path(resolve_backbone(backbone)).name}"
    path = Path(backbone)
    if path.is_dir() and path.resolve().parent == _assets().resolve() and (path / "config.json").is_file():
        return f"{BUNDLED}{path.name}"
    return None


def remote_code_files() -> dict[str, Path]:
    """The installed saerad's own remote code by file name (REMOTE_CODE, where `configuration_saerad` is imported
    from): what `saerad build` copies into a model folder."""
    import importlib.util

    spec = importlib.util.find_spec("configuration_saerad")
    if spec is None or not spec.origin:
        raise FileNotFoundError("saerad's remote code (configuration_saerad.py) is missing; reinstall saerad")
    return {name: Path(spec.origin).parent / name for name in REMOTE_CODE}
