"""Image files -> reports with provenance, through a saved SAE-Rad model."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from composition_saerad import why_empty  # noqa: F401  (the remote code's, re-exported for the CLI and the demo)
from familiarity_saerad import check_on_unfamiliar

from .data.images import ImageSource, load_image, to_grayscale
from .errors import MissingInput, UserError, first_line

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def load_model(path_or_id: str, device: str = "cpu") -> tuple[Any, Any]:
    """Load an SAE-Rad model folder or hub repo and its image processor (safetensors only)."""
    from transformers import AutoImageProcessor

    from image_processing_saerad import SAERadImageProcessor, check_processor_sizes
    from modeling_saerad import SAERadModel

    if os.path.exists(path_or_id):
        if not os.path.isdir(path_or_id) or not os.path.isfile(os.path.join(path_or_id, "config.json")):
            raise UserError(f"{path_or_id}: not a model folder (no config.json); pass the folder `saerad build` wrote")
    elif not REPO_ID.match(path_or_id):
        raise MissingInput(f"{path_or_id}: no such model folder, and not a hub repo id (ORG/NAME)")
    try:
        try:
            model = SAERadModel.from_pretrained(path_or_id).to(device).eval()
        except ValueError as err:  # a bad config value or dictionary: say which model folder it came from
            if path_or_id in str(err):
                raise UserError(first_line(err)) from None
            raise UserError(f"{path_or_id}: {first_line(err)}") from None
        processor = AutoImageProcessor.from_pretrained(path_or_id, trust_remote_code=False)
    except ValueError as err:  # a processor saved by remote code: it is ours, load it without running the repo's
        if "SAERadImageProcessor" not in str(err) and "trust_remote_code" not in str(err):
            raise UserError(f"{path_or_id}: {first_line(err)}") from None
        try:
            processor = SAERadImageProcessor.from_pretrained(path_or_id)
        except ValueError as err:  # its settings refused (a size beyond the pixel limit)
            raise UserError(f"{path_or_id}: {first_line(err)}") from None
    except OSError as err:
        raise UserError(f"{path_or_id}: cannot load the model ({first_line(err)})") from None
    try:  # whatever class the folder names, its sizes stay within the loader's pixel limit
        check_processor_sizes(processor, "preprocessor_config.json")
    except ValueError as err:
        raise UserError(f"{path_or_id}: {first_line(err)}") from None
    return model, processor


def check_remote_code(path_or_id: str) -> None:
    """Refuse a model whose code is not the installed saerad's own remote code: every `.py` file of the folder (or
    hub repo) must be byte-identical to the installed `*_saerad.py` of its name, and every `auto_map` must name one
    of them (not another repo's). `saerad serve` loads with `trust_remote_code=True` only after this check, or when
    the user passes --trust-remote-code."""
    from .resources import remote_code_files

    folder = Path(path_or_id)
    if not folder.is_dir():
        if not REPO_ID.match(path_or_id):
            raise MissingInput(f"{path_or_id}: no such model folder, and not a hub repo id (ORG/NAME)")
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(path_or_id, allow_patterns=["*.py", "*.json"]))
        except Exception as err:  # offline, no such repo, no access: one line
            raise UserError(f"{path_or_id}: cannot read the model's code to check it ({first_line(err)})") from None
    ours = {name: path.read_bytes() for name, path in remote_code_files().items()}
    foreign = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py")
                     if p.is_symlink() or ours.get(p.name) != p.read_bytes() or p.parent != folder)
    for config in sorted(folder.glob("*.json")):
        foreign += [f"{config.name}: {ref}" for ref in _auto_map_modules(config) if f"{ref}.py" not in ours]
    if foreign:
        raise UserError(f"{path_or_id}: its code is not this saerad's own remote code ({', '.join(foreign[:4])}); "
                        "`saerad serve` runs a model's code only with --trust-remote-code (read that code first)")


def _auto_map_modules(config: Path) -> list:
    """The modules a JSON file's `auto_map` names (`module.Class`, or `repo--module.Class` kept whole)."""
    import json

    if config.stat().st_size > 1 << 20:
        return [f"(a {config.stat().st_size}-byte file)"]
    try:
        data = json.loads(config.read_bytes())
    except (ValueError, RecursionError):
        return []  # not a config transformers can read either
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if not isinstance(auto_map, dict):
        return [] if auto_map is None else ["(an auto_map that is not an object)"]
    refs = [v for value in auto_map.values() for v in (value if isinstance(value, list) else [value]) if v]
    return [ref.rsplit(".", 1)[0] if isinstance(ref, str) and "--" not in ref else str(ref) for ref in refs]


def generate(model: Any, processor: Any, images: Sequence[ImageSource], batch_size: int = 8,
             feature_overrides: Optional[dict] = None, output_localization: bool = False,
             on_unfamiliar: str = "warn") -> list[dict]:
    """Write one report per image (a path, bytes, a stream or a PIL image): text, FINDINGS, IMPRESSION, sentences
    with feature ids, omitted features, familiarity (score, threshold, `unfamiliar`, `warning`);
    `feature_overrides`, `output_localization` and `on_unfamiliar` go to the model's generate
    (with localisation, each result also holds the processed `image`, the picture its maps cover)."""
    return list(iter_generate(model, processor, images, batch_size, feature_overrides, output_localization,
                              on_unfamiliar))


def iter_generate(model: Any, processor: Any, images: Sequence[ImageSource], batch_size: int = 8,
                  feature_overrides: Optional[dict] = None, output_localization: bool = False,
                  on_unfamiliar: str = "warn") -> Iterator[dict]:
    """`generate`, one result at a time: images are read a batch at a time, so memory does not grow with their
    number (all of them decoded first took 449 MB for 10 JPEGs and 1,189 MB for 300)."""
    import torch
    from PIL import Image

    try:  # fail before any compute: the overrides, and every file's existence
        model.check_feature_overrides(feature_overrides or {})
        check_on_unfamiliar(on_unfamiliar)
    except ValueError as err:
        raise UserError(str(err)) from None
    for image in images:
        if isinstance(image, (str, os.PathLike)) and not os.path.exists(image):
            raise MissingInput(f"{image}: no such file")
    for start in range(0, len(images), batch_size):
        # A PIL image (a dataset row) is used as it is; files and bytes go through the loader.
        batch = [to_grayscale(im) if isinstance(im, Image.Image) else load_image(im)
                 for im in images[start : start + batch_size]]
        pixel_values = processor(images=batch, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = model.generate(pixel_values.to(model.device), return_dict_in_generate=True,
                                 feature_overrides=feature_overrides, output_localization=output_localization,
                                 on_unfamiliar=on_unfamiliar)
        for i in range(len(batch)):
            yield {
                **({"image": processed_image(pixel_values[i], processor)} if output_localization else {}),
                "report": out.reports[i],
                "findings": out.findings[i],
                "impression": out.impressions[i],
                "sentences": out.sentences[i],
                "omitted": out.omitted[i],
                "familiarity": out.familiarity[i],
            }
        del batch, pixel_values, out


def processed_image(pixels: Any, processor: Any) -> Any:
    """The processed image (what the maps cover) as a grayscale PIL image, the processor's normalisation undone."""
    import numpy as np
    from PIL import Image

    mean = np.asarray(getattr(processor, "image_mean", None) or [0.5] * 3, dtype=np.float32)[:, None, None]
    std = np.asarray(getattr(processor, "image_std", None) or [0.5] * 3, dtype=np.float32)[:, None, None]
    picture = (pixels.float().cpu().numpy() * std + mean).mean(0)
    return Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8))


def heatmap_sheet(result: dict) -> Any:
    """One tile per FINDINGS sentence: the processed image in gray with the sentence's map in red, numbered."""
    from PIL import Image, ImageDraw

    from localization_saerad import overlay_map

    sentences = [s for s in result["sentences"] if s["report_section"] == "findings" and "localization" in s]
    image = result["image"]
    tiles = [overlay_map(image, s["localization"].numpy()) for s in sentences] or [image.convert("RGB")]
    sheet = Image.new("RGB", (image.width * len(tiles), image.height))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * image.width, 0))
        ImageDraw.Draw(sheet).text((k * image.width + 3, 2), str(k + 1), fill=(255, 255, 0))
    return sheet
