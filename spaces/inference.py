"""What the Space computes, with registry packages and the model repo only: loading, reading uploads, reports as JSON,
and maps laid back on the uploaded image."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoModel

MAX_UPLOAD_MB = 20  # also the server's upload limit: a larger file is refused before it is written to disk
MAX_PIXELS = 40_000_000  # a 6k x 6k radiograph; checked from the header, before decoding
THUMBNAIL_FOLDER = "exemplars"  # in the model folder, for models trained on phantoms (saerad build writes it)
CAPTIONS = "captions.json"  # beside the thumbnails: a sentence of each exemplar's report, where the data allow it
MAP_FLOOR = 0.15  # map values below this share of its peak are not tinted: a Grad-CAM floor is not a finding
OUTLINE = (0, 200, 255)  # the crop's dashed box: cyan, which no map colour (gray to red) can be mistaken for
# What the Space uses of the model folder's own modules, by module: the file reader and the size check, sides and
# overlays, and why a report is empty.
REMOTE_FUNCTIONS = {"image_processing_saerad": ("load_image", "check_processor_sizes"),
                    "localization_saerad": ("map_side", "overlay_map"), "composition_saerad": ("why_empty",)}


def remote_functions(model_module: str) -> SimpleNamespace:
    """`REMOTE_FUNCTIONS` from the modules beside `model_module` (the model's `type(model).__module__`): the model
    folder's modules as transformers loaded them (`transformers_modules....`), or top-level ones."""
    package = model_module.rpartition(".")[0]
    found = {}
    for module, names in REMOTE_FUNCTIONS.items():
        try:
            loaded = importlib.import_module(f"{package}.{module}" if package else module)
        except ModuleNotFoundError:
            raise RuntimeError(f"{model_module} has no {module} beside it: the model was built by an older saerad; "
                               "rebuild it with `saerad build`") from None
        if not all(hasattr(loaded, name) for name in names):
            raise RuntimeError(f"{module} lacks {', '.join(n for n in names if not hasattr(loaded, n))}: the model was "
                               "built by an older saerad; rebuild it with `saerad build`")
        found.update((name, getattr(loaded, name)) for name in names)
    return SimpleNamespace(**found)


def share_cpus(concurrency: int) -> int:
    """Give each of the `concurrency` requests computed at once its share of the CPUs as torch threads (at least
    one): on 2 cores, two requests with 2 threads each wait on each other's barriers (benchmarks/space_upload.py)."""
    threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    torch.set_num_threads(max(1, threads // max(1, concurrency)))
    return torch.get_num_threads()


class Loaded:
    """The model, its processor, the functions of its folder's modules the Space uses (`remote`) and, where the model
    folder has them, the exemplar thumbnails."""

    def __init__(self, model_id: str):
        self.model_id = model_id
        self.model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
        self.processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
        self.remote = remote_functions(type(self.model).__module__)
        # whatever processor class the repo names, its sizes stay within the pixel limit (shortest_edge 60000 was not)
        self.remote.check_processor_sizes(self.processor, f"{model_id} preprocessor_config.json")
        self.features = self.model.features
        self.thumbnails = _thumbnail_folder(model_id)
        self.captions = _captions(self.thumbnails)

    def read_upload(self, path: str, name: Optional[str] = None) -> Image.Image:
        """An uploaded PNG, JPEG or DICOM as an 8-bit grayscale image; a ValueError names the file by `name`."""
        name = name or Path(path).name
        size = os.path.getsize(path)
        if size > MAX_UPLOAD_MB * 1024 * 1024:
            raise ValueError(f"{name}: {size / 2**20:.0f} MB is over the upload limit of {MAX_UPLOAD_MB} MB")
        try:
            return self.remote.load_image(path, max_pixels=MAX_PIXELS, name=name)
        except FileNotFoundError:
            raise ValueError(f"{name}: the upload could not be read back; upload it again") from None

    def pixels(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"]

    def report(self, image: Image.Image, explained: bool = False) -> dict:
        """The report of one image, and each sentence with its features, activations, side and map; with
        `explained`, also the image's active features (`model.explain` of the same forward, under "table")."""
        pixels = self.pixels(image)
        out = self.model.generate(pixels, return_dict_in_generate=True, output_localization=True)
        sentences = [{"text": s["text"], "section": s["report_section"], "feature_ids": list(s["feature_ids"]),
                      "activations": [round(float(a), 4) for a in s["activations"]], "side": s.get("side"),
                      "localization": s["localization"].numpy(),
                      **{k: s[k] for k in ("stated_text", "side_check") if k in s}} for s in out.sentences[0]]
        result = {"report": out.reports[0], "sentences": sentences, "omitted": out.omitted[0],
                  "familiarity": (out.familiarity or [None])[0]}
        if explained:
            result["table"] = self.model.explain(pixels, generated=out)[0]
        return result

    def whatif(self, image: Image.Image, off: list) -> str:
        """The report with the features `off` switched off."""
        out = self.model.generate(self.pixels(image), feature_overrides={int(f): 0.0 for f in off})
        return out[0]

    def explain(self, image: Image.Image) -> list:
        """The image's active features, strongest first (the model's own table)."""
        return self.model.explain(self.pixels(image))[0]

    def feature_map(self, image: Image.Image, feature_id: int) -> np.ndarray:
        """Where one feature looks on the processed image, in [0, 1] (all zero where it is silent)."""
        return self.model.localize(self.pixels(image), feature_ids=[int(feature_id)])[0, 0].numpy()

    def side(self, saliency: np.ndarray) -> Optional[str]:
        return self.remote.map_side(torch.from_numpy(saliency))

    def crop_box(self, width: int, height: int) -> tuple:
        """The region of a `width` x `height` upload the model sees, in its pixels: the processor resizes the
        shortest edge (or to a fixed size), then centre-crops."""
        p = self.processor
        size = getattr(p, "size", None) or {}
        size = size if isinstance(size, dict) else dict(size)
        if getattr(p, "do_resize", True) and size.get("shortest_edge"):
            scale = size["shortest_edge"] / min(width, height)
            resized = (width * scale, height * scale)
        elif getattr(p, "do_resize", True) and size.get("height") and size.get("width"):
            resized = (float(size["width"]), float(size["height"]))
        else:
            resized = (float(width), float(height))
        crop = getattr(p, "crop_size", None) or {}
        crop = crop if isinstance(crop, dict) else dict(crop)
        if not (getattr(p, "do_center_crop", False) and crop.get("height") and crop.get("width")):
            return 0.0, 0.0, float(width), float(height)
        sx, sy = width / resized[0], height / resized[1]
        cw, ch = min(crop["width"], resized[0]), min(crop["height"], resized[1])
        left, top = (resized[0] - cw) / 2, (resized[1] - ch) / 2
        return left * sx, top * sy, (left + cw) * sx, (top + ch) * sy

    def overlay(self, image: Image.Image, saliency: np.ndarray, opacity: float = 0.6) -> Image.Image:
        """A map over the processed image shown where it belongs on the upload (at most 768 px a side): no tint below
        `MAP_FLOOR` of its peak nor outside the crop, and the crop the model saw outlined (dashed) when it is not
        the whole upload."""
        shown = display_image(image)
        scale = shown.width / image.width
        box = tuple(v * scale for v in self.crop_box(*image.size))
        placed = place_map(saliency, box, shown.width, shown.height)
        peak = float(placed.max()) if placed.size else 0.0
        placed = np.where(placed >= MAP_FLOOR * peak, placed, 0).astype(np.float32) if peak > 0 else placed
        opacity = min(max(float(opacity if opacity is not None else 0.6), 0.0), 1.0)
        out = self.remote.overlay_map(shown, placed, opacity).convert("RGB")
        if box != (0.0, 0.0, float(shown.width), float(shown.height)):
            dashed_box(out, box)
        return out

    def thumbnail(self, exemplar: str) -> Optional[str]:
        """The path of an exemplar's thumbnail, where the model folder has one."""
        if self.thumbnails is None or not exemplar.replace("-", "").replace("_", "").isalnum():
            return None
        path = self.thumbnails / f"{exemplar}.png"
        return str(path) if path.is_file() else None


def _thumbnail_folder(model_id: str) -> Optional[Path]:
    """The model's exemplar thumbnails folder: in a local model folder, or fetched from its hub repo."""
    if os.path.isdir(model_id):
        folder = Path(model_id) / THUMBNAIL_FOLDER
        return folder if folder.is_dir() else None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_id, allow_patterns=[f"{THUMBNAIL_FOLDER}/*"])) / THUMBNAIL_FOLDER
    except Exception:  # offline, or a repo without thumbnails: the Space shows exemplar ids
        return None
    return folder if folder.is_dir() else None


def _captions(folder: Optional[Path]) -> dict:
    """{exemplar id: a sentence of its report}, where the model folder holds them."""
    path = folder / CAPTIONS if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v)[:300] for k, v in data.items()} if isinstance(data, dict) else {}


def dashed_box(image: Image.Image, box: tuple, dash: int = 6) -> None:
    """Draw `box` (left, top, right, bottom) on `image` as a dashed 2 px outline, in place."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (int(round(v)) for v in box)
    right, bottom = min(right, image.width) - 1, min(bottom, image.height) - 1
    left, top = max(left, 0), max(top, 0)
    for x in range(left, right, 2 * dash):
        for y in (top, bottom - 1):
            draw.rectangle([x, y, min(x + dash, right), y + 1], fill=OUTLINE)
    for y in range(top, bottom, 2 * dash):
        for x in (left, right - 1):
            draw.rectangle([x, y, x + 1, min(y + dash, bottom)], fill=OUTLINE)


def place_map(saliency: np.ndarray, box: tuple, width: int, height: int) -> np.ndarray:
    """A map over the processed (cropped) image laid onto the upload's `height` x `width` pixels: resized into the
    crop `box`, zero outside it."""
    left, top, right, bottom = (int(round(v)) for v in box)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    placed = np.zeros((height, width), dtype=np.float32)
    resized = Image.fromarray((np.clip(saliency, 0, 1) * 255).astype(np.uint8)).resize(
        (right - left, bottom - top), Image.BILINEAR)
    region = np.asarray(resized, dtype=np.float32) / 255
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, height), min(right, width)
    placed[y0:y1, x0:x1] = region[y0 - top : y1 - top, x0 - left : x1 - left]
    return placed


def display_image(image: Image.Image, longest: int = 768) -> Image.Image:
    """A copy of the upload no longer than `longest` pixels a side, for the page."""
    scale = longest / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)


def familiarity_notice(result: dict) -> str:
    """The Markdown shown above the report: the warning when the image is unlike the model's training images, a note
    when the model cannot tell, else nothing."""
    familiarity = result.get("familiarity") or {}
    if familiarity.get("warning"):
        return f"⚠️ **Unlike the training images.** {familiarity['warning']}"
    if familiarity and not familiarity.get("available"):
        return "This model has no familiarity calibration: it cannot say whether the image is like its training images."
    return ""


def public_report(result: dict) -> dict:
    """A report as the API returns it: JSON only (no maps)."""
    return {"report": result["report"], "familiarity": result.get("familiarity"),
            "sentences": [{k: v for k, v in s.items() if k != "localization"} for s in result["sentences"]],
            "omitted": [{"feature_id": o["feature_id"], "activation": round(float(o["activation"]), 4),
                         "reason": o["reason"]} for o in result["omitted"]]}
