# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad: a frozen vision backbone, a sparse autoencoder over its pooled embedding, and a deterministic composer
that writes a report from the descriptions of the active features (arXiv 2410.03334)."""

import io
import json
import math
import os
import re
import stat
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO, Optional, Union

import torch
from torch import nn
from transformers import AutoModel, BitImageProcessorPil, PreTrainedModel
from transformers.utils import ModelOutput, cached_file, logging

try:  # as remote code (transformers_modules) the two files are siblings in a package
    from .configuration_saerad import SAERadConfig
except ImportError:  # installed with saerad, both files are top-level modules
    from configuration_saerad import SAERadConfig

logger = logging.get_logger(__name__)

FEATURE_DICTIONARY_NAME = "feature_dictionary.json"
FEATURE_DICTIONARY_SCHEMA_VERSION = 1
# Anatomical sections in the order a FINDINGS paragraph reads them.
SECTIONS = ("devices", "lungs", "pleura", "heart/mediastinum", "bones", "other")
FINDING_STATUSES = ("positive", "negative", "uncertain")
COMPOSER_SETTINGS = ("min_activation", "max_report_features", "min_feature_score", "normal_impression")
# What a model repo may hand the composer: a dictionary file, a description and an exemplar id are bounded, so a
# stranger's repo cannot fill memory or a report (a real dictionary: ~2 KB a feature, sentences under 300 characters).
MAX_DICTIONARY_BYTES = 256 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 2000
MAX_ID_CHARS = 256
MAX_JSON_DEPTH = 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A positive "No Finding" contradicts any positive or uncertain observation except these.
_COMPATIBLE_WITH_NO_FINDING = {"No Finding", "Support Devices"}


@dataclass
class SAERadOutput(ModelOutput):
    """
    Output of [`SAERadModel.forward`].

    Args:
        image_embeds (`torch.FloatTensor` of shape `(batch_size, d_in)`):
            Pooled backbone embedding, normalised as the SAE sees it.
        feature_activations (`torch.FloatTensor` of shape `(batch_size, d_sae)`):
            SAE feature activations; inactive features are exactly zero.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, d_in)`):
            The SAE's reconstruction of `image_embeds`.
    """

    image_embeds: Optional[torch.FloatTensor] = None
    feature_activations: Optional[torch.FloatTensor] = None
    reconstruction: Optional[torch.FloatTensor] = None


@dataclass
class SAERadGenerateOutput(ModelOutput):
    """
    Output of [`SAERadModel.generate`] with `return_dict_in_generate=True`.

    Args:
        reports (`list[str]`): one report per image, `"FINDINGS: ...\n\nIMPRESSION: ..."` (empty when nothing fired).
        findings (`list[str]`): the FINDINGS paragraph of each report.
        impressions (`list[str]`): the IMPRESSION of each report.
        feature_activations (`torch.FloatTensor` of shape `(batch_size, d_sae)`): SAE activations per image.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, d_in)`): the SAE's input per image.
        sentences (`list[list[dict]]`): per image, each sentence with `text`, `report_section` (`"findings"` or
            `"impression"`), anatomical `section`, and the `feature_ids` and `activations` that produced it; with
            `feature_overrides`, `overridden` lists the overridden features among them; with `output_localization`,
            `localization` (an `(H, W)` map in [0, 1]) and `side` ("left", "right", "bilateral" or "central").
        omitted (`list[list[dict]]`): per image, active features that wrote nothing, with `feature_id`,
            `activation`, `reason` (a sentence) and `code` (`"no_description"`, `"low_score"`, `"max_features"` or
            `"contradicted"`).
    """

    reports: Optional[list] = None
    findings: Optional[list] = None
    impressions: Optional[list] = None
    feature_activations: Optional[torch.FloatTensor] = None
    image_embeds: Optional[torch.FloatTensor] = None
    sentences: Optional[list] = None
    omitted: Optional[list] = None


class SparseAutoencoder(nn.Module):
    """Inference side of the SAE architectures: `encode` (exact zeros for inactive features) and `decode`."""

    def __init__(self, d_in: int, d_sae: int, architecture: str = "gated", k: int = 1, input_scale: float = 1.0,
                 center_inputs: bool = False):
        super().__init__()
        self.architecture, self.k, self.input_scale = architecture, k, input_scale
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if self.architecture == "gated":
            self.b_gate = nn.Parameter(torch.zeros(d_sae))
            self.r_mag = nn.Parameter(torch.zeros(d_sae))
            self.b_mag = nn.Parameter(torch.zeros(d_sae))
        else:
            self.b_enc = nn.Parameter(torch.zeros(d_sae))
        if self.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae))
        if center_inputs:
            self.register_buffer("input_mean", torch.zeros(d_in))
        else:
            self.input_mean = None

    @classmethod
    def from_config(cls, config: SAERadConfig) -> "SparseAutoencoder":
        """The SAE a model config describes."""
        return cls(config.d_in, config.d_sae, config.sae_architecture, config.k, config.input_scale,
                   config.center_inputs)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone embedding -> SAE input (centred by the stored mean, scaled)."""
        if self.input_mean is not None:
            x = x - self.input_mean
        return x * self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """SAE input `(..., d_in)` -> feature activations `(..., d_sae)`."""
        x = x - self.b_dec
        if self.architecture == "gated":
            gate = (x @ self.W_enc + self.b_gate) > 0
            magnitude = torch.relu(x @ (self.W_enc * torch.exp(self.r_mag)) + self.b_mag)
            return magnitude * gate
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "relu":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold)
        values, indices = pre.topk(self.k, dim=-1)  # topk: ReLU over the k largest pre-activations
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Feature activations `(..., d_sae)` -> reconstruction `(..., d_in)`."""
        return f @ self.W_dec + self.b_dec


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:  # only containers are pushed: a 49,152-feature dictionary holds millions of leaves
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = list(item.values()) if isinstance(item, dict) else item
        if any(issubclass(kind, (dict, list)) for kind in set(map(type, children))):  # types read at C speed
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_feature_dictionary(path: Union[str, os.PathLike]) -> Any:
    """Parse a `feature_dictionary.json` from a model folder or repo: size-capped, UTF-8, JSON; errors name the file."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise ValueError(f"{source}: not a regular file")
    size = os.path.getsize(source)
    if size > MAX_DICTIONARY_BYTES:
        raise ValueError(f"{source}: {size} bytes is over the feature dictionary limit of {MAX_DICTIONARY_BYTES}")
    with open(source, "rb") as f:
        raw = f.read(MAX_DICTIONARY_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not UTF-8 text (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def validate_feature_dictionary(data: Any, d_sae: int, source: str = "feature dictionary") -> dict:
    """Check a feature dictionary against the schema and the bounds on what a repo may hand the composer (lengths,
    nesting, no control characters); return it with features sorted by id."""

    def fail(where: str, problem: str):
        raise ValueError(f"{source}: {where} {problem}")

    def text(where: str, value: Any, limit: int, nullable: bool = False) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str):
            fail(where, "must be a string" + (" or null" if nullable else ""))
        if len(value) > limit:
            fail(where, f"is {len(value)} characters; the limit is {limit}")
        if _CONTROL.search(value):
            fail(where, "holds control characters (plain text only)")

    if not isinstance(data, dict):
        fail("top level", f"must be a JSON object; got {type(data).__name__}")
    if _depth(data) > MAX_JSON_DEPTH:
        fail("top level", f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if data.get("schema_version") != FEATURE_DICTIONARY_SCHEMA_VERSION:
        fail("schema_version", f"must be {FEATURE_DICTIONARY_SCHEMA_VERSION}; got {data.get('schema_version')!r}")
    features = data.get("features")
    if not isinstance(features, list):
        fail("features", f"must be a list; got {type(features).__name__}")
    seen = set()
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, dict):
            fail(where, "must be an object")
        fid = feature.get("id")
        if not isinstance(fid, int) or isinstance(fid, bool) or not 0 <= fid < d_sae:
            fail(f"{where}.id", f"must be an integer in [0, d_sae={d_sae}); got {fid!r}")
        if fid in seen:
            fail(f"{where}.id", f"repeats feature {fid}")
        seen.add(fid)
        text(f"{where}.description", feature.get("description"), MAX_DESCRIPTION_CHARS)
        if feature.get("section") not in SECTIONS:
            fail(f"{where}.section", f"must be one of {SECTIONS}; got {feature.get('section')!r}")
        findings = feature.get("findings", [])
        if not isinstance(findings, list):
            fail(f"{where}.findings", "must be a list")
        for j, finding in enumerate(findings):
            if not isinstance(finding, dict):
                fail(f"{where}.findings[{j}]", "must be an object")
            text(f"{where}.findings[{j}].label", finding.get("label"), MAX_ID_CHARS)
            if finding.get("status") not in FINDING_STATUSES:
                got = finding.get("status")
                fail(f"{where}.findings[{j}].status", f"must be one of {FINDING_STATUSES}; got {got!r}")
            for key in ("laterality", "severity"):
                text(f"{where}.findings[{j}].{key}", finding.get(key), MAX_ID_CHARS, nullable=True)
        for key in ("score", "frequency"):
            value = feature.get(key)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and (not is_number or math.isnan(value)):
                fail(f"{where}.{key}", f"must be a number or null; got {value!r}")
        exemplars = feature.get("exemplars", [])
        if not isinstance(exemplars, list):
            fail(f"{where}.exemplars", "must be a list of strings")
        if not (set(map(type, exemplars)) <= {str} and max(map(len, exemplars), default=0) <= MAX_ID_CHARS
                and not _CONTROL.search("".join(exemplars))):  # checked one by one only to name the bad one
            for j, exemplar in enumerate(exemplars):
                text(f"{where}.exemplars[{j}]", exemplar, MAX_ID_CHARS)
    return {**data, "features": sorted(features, key=lambda f: f["id"])}


# Report text: one sentence splitter and normaliser, for the composer here and for saerad's scorer and labeler.
# De-identification tokens: MIMIC-CXR's "___" and IU X-ray's "XXXX".
_IU_XRAY = re.compile(r"\bx-XXXX\b", re.I)
_DEID = re.compile(r"_{2,}|\bX{2,}\b")
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "fig", "cf", "al", "resp", "nos"}
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")


def normalize_deid(text: str, replacement: str = "") -> str:
    """Remove de-identification tokens (MIMIC `___`, IU `XXXX`) and tidy the spacing they leave."""
    text = _IU_XRAY.sub("x-ray", text)
    text = _DEID.sub(replacement, text)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)
    text = re.sub(r"([.,;:])(?:[ \t]*[.,;:])+", r"\1", text)  # "Dr. ___ ." leaves "Dr.."
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _ends_sentence(before: str, after: str) -> bool:
    words = before.rstrip(".!?\"')] ").split()
    if not words:
        return False
    last = words[-1].lower().lstrip("([\"'")
    if len(words) == 1 and re.fullmatch(r"\(?\d{1,2}\)?", last):
        return False  # the "1." of a numbered item starts its sentence
    if last in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last):
        return False  # "Dr. Smith", "approx. 3 cm", initials
    return not after or not after[0].islower()


def split_sentences(text: str, deid: bool = True) -> list:
    """Split report text into sentences, keeping numbered items, abbreviations, decimals and measurements intact."""
    if deid:
        text = normalize_deid(text)
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        candidate = text[start : m.end()]
        if m.group().strip() == "" or _ends_sentence(candidate, text[m.end() : m.end() + 1]):
            sentences.append(candidate)
            start = m.end()
    sentences.append(text[start:])
    out = []
    for s in sentences:
        s = " ".join(s.split())
        if re.search(r"[A-Za-z0-9]", s):
            out.append(s)
    return out


def normalize_sentence(sentence: str) -> str:
    """Lower-case, drop list numbering, punctuation and extra spaces: the key for counting "the same" sentence."""
    sentence = re.sub(r"^\(?\d{1,2}[.)]\s+", "", sentence.strip())
    return " ".join(re.sub(r"[^a-z0-9.]+", " ", sentence.lower()).replace(" .", " ").strip(" .").split())


def _sides_overlap(a: Optional[str], b: Optional[str]) -> bool:
    return a is None or b is None or a == b or "bilateral" in (a, b)


def _present(finding: dict) -> bool:
    return finding["status"] in ("positive", "uncertain")


def _contradicts(new: list, kept: list) -> bool:
    """Do two findings lists state opposite things about one observation on overlapping sides?"""
    for a in new:
        for b in kept:
            if a["label"] == b["label"]:
                if _present(a) != _present(b) and _sides_overlap(a.get("laterality"), b.get("laterality")):
                    return True
            elif _present(a) and _present(b):
                pair = {a["label"], b["label"]}
                if "No Finding" in pair and not pair <= _COMPATIBLE_WITH_NO_FINDING:
                    return True
    return False


def _rounded(value: Any) -> Any:
    """A score as a reason states it: three decimals (a held-out AUROC is no more precise), None as "unscored"."""
    return "unscored" if value is None else f"{float(value):.3f}"


def _findings_key(findings: list) -> tuple:
    # null sorts as "": a dictionary may give one label null and "left" sides
    return tuple(sorted((f["label"], f["status"], f.get("laterality") or "", f.get("severity") or "")
                        for f in findings))


def compose_report(
    activations: list,
    features: dict,
    min_activation: float = 0.0,
    max_report_features: int = 15,
    min_feature_score: Optional[float] = None,
    normal_impression: str = "No acute cardiopulmonary abnormality.",
) -> dict:
    """Compose one report from feature activations and `{feature_id: feature}`; every sentence keeps its provenance.

    Features write strongest first (ties by id). A feature is omitted when it has no description, scores below
    `min_feature_score`, contradicts a stronger feature's findings, or comes after `max_report_features` writers.
    Sentences with the same normalised text, or features with the same findings, are merged.
    """
    active = sorted(
        ((a, i) for i, a in enumerate(activations) if a > 0 and a >= min_activation), key=lambda t: (-t[0], t[1])
    )
    sentences, omitted, writers = [], [], []  # writers: (feature, activation, its sentences)
    by_text, by_findings = {}, {}
    for act, fid in active:
        feature = features.get(fid)
        code = reason = None
        if feature is None or not feature.get("description", "").strip():
            code, reason = "no_description", "no description"
        elif min_feature_score is not None and (feature.get("score") is None or feature["score"] < min_feature_score):
            code, reason = "low_score", (f"score {_rounded(feature.get('score'))} below min_feature_score "
                                   f"{_rounded(min_feature_score)}")
        elif len(writers) >= max_report_features:
            code, reason = "max_features", f"beyond max_report_features={max_report_features}"
        else:
            findings = feature.get("findings", [])
            rival = next((w for w in writers if _contradicts(findings, w[0].get("findings", []))), None)
            if rival is not None:
                code, reason = "contradicted", f"contradicted by stronger feature {rival[0]['id']}"
        if code is not None:
            omitted.append({"feature_id": fid, "activation": act, "reason": reason, "code": code})
            continue
        key = _findings_key(feature.get("findings", []))
        own = []
        if key and key in by_findings:
            own = by_findings[key]
        else:
            for text in split_sentences(feature["description"], deid=False):
                norm = normalize_sentence(text)
                if norm not in by_text:
                    by_text[norm] = {"text": text, "report_section": "findings", "section": feature["section"],
                                     "feature_ids": [], "activations": []}
                    sentences.append(by_text[norm])
                own.append(by_text[norm])
            if key:
                by_findings[key] = own
        for sentence in own:
            if fid not in sentence["feature_ids"]:
                sentence["feature_ids"].append(fid)
                sentence["activations"].append(act)
        writers.append((feature, act, own))

    findings_sentences = [s for section in SECTIONS for s in sentences if s["section"] == section]
    impression_sentences = []
    for feature, act, own in writers:
        if any(_present(f) and f["label"] != "No Finding" for f in feature.get("findings", [])):
            for s in own:
                if all(s["text"] != t["text"] for t in impression_sentences):
                    impression_sentences.append({**s, "report_section": "impression",
                                                 "feature_ids": list(s["feature_ids"]),
                                                 "activations": list(s["activations"])})
    if not impression_sentences and writers and normal_impression:
        impression_sentences = [{"text": normal_impression, "report_section": "impression", "section": "other",
                                 "feature_ids": [w[0]["id"] for w in writers], "activations": [w[1] for w in writers]}]
    findings_text = " ".join(s["text"] for s in findings_sentences)
    impression_text = " ".join(s["text"] for s in impression_sentences)
    report = f"FINDINGS: {findings_text}\n\nIMPRESSION: {impression_text}" if findings_text else ""
    return {"report": report, "findings": findings_text, "impression": impression_text,
            "sentences": findings_sentences + impression_sentences, "omitted": omitted}


def why_empty(result: dict) -> str:
    """Why a generated report is empty, from the features that fired and were left out (`result["omitted"]`)."""
    omitted = result.get("omitted") or []
    if not omitted:
        return "(no report: no feature fired on this image)"
    unscored = sum(o["code"] == "low_score" for o in omitted)
    bare = sum(o["code"] == "no_description" for o in omitted)
    parts = ([f"{unscored} whose description was not validated on held-out images"]
             if unscored else []) + ([f"{bare} without a description"] if bare else [])
    fired = f"{len(omitted)} feature{'s' if len(omitted) != 1 else ''} fired"
    return f"(no report: {fired}, " + " and ".join(parts) + ")" if parts else f"(no report: {fired})"


def pool_backbone_output(outputs, pooling: str, vision_config) -> torch.Tensor:
    """One vector per image from a backbone's output: the CLS token, the mean or the per-channel maximum of the patch
    tokens, or CLS and mean together."""
    hidden = outputs.last_hidden_state
    if hidden.dim() == 4:  # convolutional backbone: (batch, channels, height, width)
        cls = outputs.pooler_output.flatten(1)
        patches = hidden.flatten(2).transpose(1, 2)
    else:
        registers = getattr(vision_config, "num_register_tokens", 0) or 0
        cls = hidden[:, 0]
        patches = hidden[:, 1 + registers :]
    if pooling == "cls":
        return cls
    if pooling == "max":
        return patches.max(dim=1).values
    mean = patches.mean(dim=1)
    return mean if pooling == "mean" else torch.cat([cls, mean], dim=-1)


# The bounds saerad's image loader applies to files, applied here to what a Hub user hands the processor.
MAX_PIXELS = 100_000_000  # decompression-bomb limit: well above a 4k x 4k radiograph, far below a bomb
MIN_SIZE = 32  # smaller than this is no radiograph (and breaks patching at 14-16 px)
MAX_ASPECT = 10  # a radiograph is at most ~1:3; beyond 1:10 the shortest-edge resize blows a tiny image up


def check_image_size(width: int, height: int, name: str = "image", max_pixels: int = MAX_PIXELS,
                     min_size: int = MIN_SIZE) -> None:
    """Refuse an image by its size: too many pixels, too small, or too elongated to be a radiograph."""
    if width * height > max_pixels:
        raise ValueError(f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)")
    if min(width, height) < min_size:
        raise ValueError(f"{name}: {width}x{height} pixels is smaller than the minimum {min_size}x{min_size}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(f"{name}: {width}x{height} pixels is more elongated than 1:{MAX_ASPECT}; not a radiograph")


def stretch_to_uint8(pixels) -> "Any":
    """Any numeric pixel array stretched to 0-255 over its own range (a flat image becomes black)."""
    import numpy as np

    pixels = np.asarray(pixels).astype(np.float32)  # float64 would double the peak memory of a large image
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _checked_image(image: Any, name: str) -> Any:
    """`image` after the size checks; a 16-bit, 32-bit or float PIL image or integer array stretched to 8 bits."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        check_image_size(*image.size, name)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # BiT's RGB conversion would clip them to white
            return Image.fromarray(stretch_to_uint8(image))
        return image
    shape = tuple(image.shape) if hasattr(image, "shape") else ()
    if len(shape) == 2:
        height, width = shape
    elif len(shape) == 3:
        channels_first = shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
        height, width = shape[1:] if channels_first else shape[:2]
    else:
        raise ValueError(f"{name}: expected a PIL image or an (H, W) / (H, W, C) / (C, H, W) array; got shape {shape}")
    check_image_size(int(width), int(height), name)
    if isinstance(image, np.ndarray) and image.dtype.kind in "iu" and image.dtype.itemsize > 1:
        return stretch_to_uint8(image)
    return image


# Reading radiograph files: saerad's loader, here so that the Space and Hub users read files as saerad does.
ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]  # what load_image reads
MAX_FILE_BYTES = 1 << 30  # a compressed radiograph is 1-50 MB; an uncompressed 4k x 4k 16-bit DICOM 32 MB
DICOM_SUFFIXES = (".dcm", ".dicom")


def _bounded(data: bytes, name: str) -> bytes:
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{name}: over the image file limit of {MAX_FILE_BYTES} bytes")
    return data


def _read(source: "ImageSource") -> tuple:
    if isinstance(source, (bytes, bytearray)):
        return _bounded(bytes(source), "<bytes>"), "<bytes>"
    if hasattr(source, "read"):
        name = getattr(source, "name", "<stream>")
        return _bounded(source.read(MAX_FILE_BYTES + 1), name), name
    name = os.fspath(source)
    if os.path.isdir(name):
        raise ValueError(f"{name}: is a folder, not an image file")
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such file")
    if not stat.S_ISREG(os.stat(name).st_mode):  # a FIFO would block forever, /dev/zero never ends
        raise ValueError(f"{name}: not a regular file")
    with open(name, "rb") as f:
        return _bounded(f.read(MAX_FILE_BYTES + 1), name), name


def _one_line(err: Exception) -> str:
    # decoder errors list what to install over several lines; the CLI prints one
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _load_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE) -> Any:
    import numpy as np
    from PIL import Image

    try:  # optional: transformers' remote-code check skips imports guarded like this
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ValueError(f"{name}: reading DICOM needs pydicom (pip install pydicom)") from None

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{name}: not a readable DICOM file ({_one_line(err)})") from None
    if "PixelData" not in ds:
        raise ValueError(f"{name}: DICOM file has no pixel data")
    try:  # the header bounds what decoding will allocate, before any pixel is decoded
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{name}: DICOM header lacks a usable size ({_one_line(err)})") from None
    check_image_size(columns, rows, name, max_pixels, min_size)
    if frames < 1 or samples not in (1, 3, 4) or bits not in (1, 8, 16, 32, 64):
        raise ValueError(f"{name}: DICOM header is implausible ({frames} frames, {samples} samples, {bits} bits)")
    if rows * columns * frames * samples * max(bits, 8) // 8 > 4 * max_pixels:
        raise ValueError(f"{name}: {frames} frames of {columns}x{rows} pixels exceed the decoding limit")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for truncated or unsupported pixel data
        raise ValueError(f"{name}: cannot decode the DICOM pixel data ({_one_line(err)})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, ds)
        has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
        if has_voi:
            pixels = apply_voi_lut(pixels, ds, index=0)
        pixels = stretch_to_uint8(np.asarray(pixels))
        if photometric == "MONOCHROME1":  # MONOCHROME1: high values are dark
            pixels = 255 - pixels
        return pixels
    if pixels.ndim == 3:  # colour DICOM (secondary capture)
        return np.asarray(Image.fromarray(stretch_to_uint8(pixels)).convert("L"))
    return stretch_to_uint8(pixels)


def to_grayscale(image: Any) -> Any:
    """Any PIL image (16-bit, RGBA, palette, ...) as 8-bit grayscale."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(stretch_to_uint8(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the background of a radiograph.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def load_image(
    source: "ImageSource", *, max_pixels: int = MAX_PIXELS, min_size: int = MIN_SIZE, name: Optional[str] = None
) -> Any:
    """Load a PNG, JPEG or DICOM (path, bytes or binary stream) as a grayscale 8-bit PIL image; errors name the
    file by `name` when given (an upload's own file name), else by its path."""
    from PIL import Image, ImageOps

    data, path = _read(source)
    name = name or path
    if not data:
        raise ValueError(f"{name}: file is empty")
    # A DICOM without its 128-byte preamble starts with a group 0002 or 0008 tag (little-endian), as pydicom writes it
    is_dicom = (data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
                or data[:2] in (b"\x02\x00", b"\x08\x00") and data[2:4] in (b"\x00\x00", b"\x01\x00", b"\x02\x00",
                                                                        b"\x05\x00", b"\x08\x00", b"\x10\x00"))
    if is_dicom:
        pixels = _load_dicom(data, name, max_pixels, min_size)
        check_image_size(pixels.shape[1], pixels.shape[0], name, max_pixels, min_size)
        return Image.fromarray(pixels, mode="L")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name}: not an image (PNG, JPEG or DICOM expected)") from None
    check_image_size(*image.size, name, max_pixels, min_size)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: truncated or corrupt image data ({err})") from None
    image = ImageOps.exif_transpose(image)
    return to_grayscale(image)


class SAERadImageProcessor(BitImageProcessorPil):
    """The backbone's resize, centre crop and normalisation (BiT's, as RAD-DINO's), after refusing what no radiograph
    is (more than 10^8 pixels, under 32 px a side, more elongated than 1:10) and stretching 16-bit, 32-bit and float
    images to 8 bits over their own range, as saerad's image loader does for files."""

    def preprocess(self, images, *args, **kwargs):
        listed = images if isinstance(images, (list, tuple)) else [images]
        checked = [_checked_image(im, f"image {i}") for i, im in enumerate(listed)]
        return super().preprocess(checked if isinstance(images, (list, tuple)) else checked[0], *args, **kwargs)


def as_checked_processor(processor):
    """A BiT image processor (RAD-DINO's, saerad's backbones') as an SAERadImageProcessor with the same settings;
    any other processor as it is."""
    if type(processor).__name__ not in ("BitImageProcessor", "BitImageProcessorPil", "BitImageProcessorFast"):
        return processor
    settings = {k: v for k, v in processor.to_dict().items() if k not in ("image_processor_type", "auto_map")}
    return SAERadImageProcessor(**settings)


def default_image_processor(vision_config):
    """An image processor for a backbone config: resize and centre-crop to its image size, grayscale to RGB (a plain
    BiT processor; an SAE-Rad model folder saves it as an SAERadImageProcessor)."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import BitImageProcessor as processor_class
    else:
        processor_class = BitImageProcessorPil
    size = getattr(vision_config, "image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return processor_class(
        do_resize=True, size={"shortest_edge": size}, do_center_crop=True, crop_size={"height": size, "width": size},
        do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


LOCALIZATION_METHODS = ("gradcam", "gradient")


def _feature_map(outputs, vision_config) -> tuple:
    """The spatial features Grad-CAM is taken against, as the backbone computed them, and a function laying a tensor
    of that shape out as `(batch, channels, h, w)`: the input to the backbone's last stage or block (a CNN's third
    stage, twice the last stage's resolution; the patch tokens a ViT's last block reads, which the CLS output reads),
    else its last feature map."""
    states = getattr(outputs, "hidden_states", None)
    hidden = states[-2] if states is not None and len(states) >= 2 else outputs.last_hidden_state
    if hidden.dim() == 4:
        return hidden, lambda x: x
    start = 1 + (getattr(vision_config, "num_register_tokens", 0) or 0)
    n = hidden.shape[1] - start
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"cannot lay {n} patch tokens on a square grid for localisation")
    return hidden, lambda x: x[:, start:].transpose(1, 2).reshape(x.shape[0], x.shape[-1], side, side)


def map_side(saliency: torch.Tensor) -> Optional[str]:
    """Where a map `(H, W)` of a PA radiograph puts its mass: "central" (over half in the middle third of the
    columns), else "left" or "right" of the patient (60% or more on that half: the patient's left is the image's
    right), else "bilateral"; None for an empty map."""
    columns = saliency.float().sum(0)
    total = float(columns.sum())
    if total <= 0:
        return None
    width = columns.numel()
    if float(columns[width // 3 : width - width // 3].sum()) / total > 0.5:
        return "central"
    patient_left = float(columns[width - width // 2 :].sum()) / total
    return "left" if patient_left >= 0.6 else "right" if patient_left <= 0.4 else "bilateral"


def overlay_map(image: Any, saliency: Any, opacity: float = 0.6) -> Any:
    """A PIL image in gray with a map in [0, 1] in red at `opacity`; the image is resized to the map's `(H, W)`."""
    import numpy as np
    from PIL import Image

    saliency = np.asarray(saliency, dtype=np.float32)
    gray = np.asarray(image.convert("L").resize(saliency.shape[::-1]), dtype=np.float32) / 255
    heat = np.clip(saliency, 0, 1) * float(opacity)
    rgb = np.stack([gray * (1 - heat) + heat, gray * (1 - heat), gray * (1 - heat)], -1)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


def _directional_grads(traced: dict, directions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """For each direction k and image i, d (directions[k, i] . acts[i]) / d target[i]: a feature's gradient when the
    direction is one-hot, a sentence's when it holds the activations of the sentence's features. Images are
    independent, so every direction comes from one backward: the (direction, image) pairs that are not all-zero
    stacked into one batch through the traced head, else a batched backward (vmap over the directions) of the
    traced graph, else one backward per direction where an operation cannot be batched."""
    k, batch = directions.shape[:2]
    grads = torch.zeros(k, batch, *target.shape[1:], dtype=target.dtype)
    if "head" in traced and target is traced["source"]:
        pairs = (directions != 0).any(-1).nonzero()  # (n, 2): direction index, image index
        if len(pairs) == 0:
            return grads
        with torch.enable_grad():
            stacked = target.detach()[pairs[:, 1]].requires_grad_(True)
            score = (traced["head"](stacked) * directions[pairs[:, 0], pairs[:, 1]].to(target.dtype)).sum()
            (found,) = torch.autograd.grad(score, stacked)
        grads[pairs[:, 0], pairs[:, 1]] = found
        return grads
    acts = traced["acts"]
    directions = directions.to(acts.dtype)
    with torch.enable_grad():
        try:
            (grads,) = torch.autograd.grad(acts, target, grad_outputs=directions, is_grads_batched=True,
                                           retain_graph=True)
            return grads
        except RuntimeError:
            return torch.stack([torch.autograd.grad(acts, target, grad_outputs=d, retain_graph=True)[0]
                                for d in directions])


WEIGHTS_INDEX = "model.safetensors.index.json"


def _refuse_pickled_weights(name_or_path: Union[str, os.PathLike], hub_kwargs: dict) -> None:
    """Refuse, before transformers opens anything, a weight index naming a non-safetensors file, and a folder that
    holds pickled weights but no safetensors (transformers would call torch.load on them)."""
    source = os.fspath(name_or_path)
    subfolder = hub_kwargs.get("subfolder") or ""
    folder = os.path.join(source, subfolder)
    if os.path.isdir(folder):
        names = set(os.listdir(folder))
        pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")))
        if pickled and not any(n.endswith(".safetensors") for n in names):
            raise ValueError(f"{source}: holds only pickled weights ({', '.join(pickled)}); SAE-Rad loads "
                             "safetensors only and never unpickles")
    index = cached_file(source, WEIGHTS_INDEX, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    if index is None:
        return
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        files = set(weight_map.values())
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{source}: {WEIGHTS_INDEX} is not a valid weight index") from None
    bad = sorted(str(name) for name in files if not str(name).endswith(".safetensors") or "/" in str(name)
                 or "\\" in str(name) or str(name).startswith("."))
    if bad:
        raise ValueError(f"{source}: {WEIGHTS_INDEX} names weights that are not safetensors files in the folder "
                         f"({', '.join(bad[:3])}); SAE-Rad loads safetensors only")


class SAERadPreTrainedModel(PreTrainedModel):
    config_class = SAERadConfig
    base_model_prefix = "sae_rad"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SparseAutoencoder):
            nn.init.normal_(module.W_dec, std=1.0)
            module.W_dec.div_(module.W_dec.norm(dim=1, keepdim=True))
            module.W_enc.copy_(module.W_dec.t())
            nn.init.zeros_(module.b_dec)
            for name in ("b_enc", "b_gate", "r_mag", "b_mag"):
                if hasattr(module, name):
                    nn.init.zeros_(getattr(module, name))
            if hasattr(module, "threshold"):
                nn.init.constant_(module.threshold, 1e-3)
            if module.input_mean is not None:
                nn.init.zeros_(module.input_mean)


class SAERadModel(SAERadPreTrainedModel):
    """Frozen vision backbone + sparse autoencoder + feature dictionary; `generate` writes traceable reports."""

    def __init__(self, config: SAERadConfig):
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.sae = SparseAutoencoder.from_config(config)
        self.feature_dictionary: Optional[dict] = None
        self.image_processor = None  # saved as preprocessor_config.json; derived from the vision config when unset
        self.post_init()

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """Pooled backbone embedding `(batch_size, d_in)`, before the SAE's normalisation."""
        outputs = self.vision_model(pixel_values=pixel_values)
        return pool_backbone_output(outputs, self.config.pooling, self.config.vision_config)

    def forward(self, pixel_values: torch.FloatTensor, **kwargs) -> SAERadOutput:
        pooled = self.get_image_features(pixel_values).to(self.sae.W_enc.dtype)
        image_embeds = self.sae.normalize(pooled)
        activations = self.sae.encode(image_embeds)
        return SAERadOutput(
            image_embeds=image_embeds, feature_activations=activations, reconstruction=self.sae.decode(activations)
        )

    def load_feature_dictionary(self, data_or_path: Union[dict, str, os.PathLike]) -> None:
        """Attach a feature dictionary (a dict or a path to `feature_dictionary.json`) after validating it."""
        source = "feature dictionary"
        if not isinstance(data_or_path, dict):
            source = str(data_or_path)
            data_or_path = read_feature_dictionary(data_or_path)
        self.feature_dictionary = validate_feature_dictionary(data_or_path, self.config.d_sae, source)

    @property
    def features(self) -> dict:
        """`{feature_id: feature}` of the attached dictionary (empty without one)."""
        if self.feature_dictionary is None:
            return {}
        return {f["id"]: f for f in self.feature_dictionary["features"]}

    def check_feature_overrides(self, feature_overrides: dict) -> dict:
        """`{feature_id: value}` checked (ids in range, values >= 0, only described features switched on), values as
        floats; a ValueError says which entry is wrong (public, so callers can refuse before any compute)."""
        features = self.features
        checked = {}
        for fid, value in feature_overrides.items():
            if isinstance(fid, bool) or not isinstance(fid, int) or not 0 <= fid < self.config.d_sae:
                raise ValueError(f"feature_overrides: feature id {fid!r} is not in [0, d_sae={self.config.d_sae})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"feature_overrides: feature {fid} must be set to a number >= 0; got {value!r}")
            if value > 0 and not (features.get(fid) or {}).get("description", "").strip():
                raise ValueError(f"feature_overrides: feature {fid} has no description, so switching it on would "
                                 "write nothing")
            checked[fid] = float(value)
        return checked

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor,
        return_dict_in_generate: bool = False,
        output_localization: bool = False,
        feature_overrides: Optional[dict] = None,
        **overrides,
    ) -> Union[list, SAERadGenerateOutput]:
        """Write one report per image; `overrides` replace the config's composer settings for this call.

        `feature_overrides={feature_id: value}` sets features before composition (0 switches one off, a value
        switches one on); the sentences they touch list them under `overridden`. `output_localization=True` (with
        `return_dict_in_generate`) attaches to each sentence the activation-weighted map of its features over the
        input image (`localization`, `(H, W)` in [0, 1]) and the side read from it (`side`).
        """
        if self.feature_dictionary is None:
            raise ValueError(
                "this SAE-Rad model has no feature dictionary, so it cannot write reports (forward still works); "
                f"add one with model.load_feature_dictionary(...) or a {FEATURE_DICTIONARY_NAME} in the model folder "
                "(made by `saerad interpret`, assembled by `saerad build`)"
            )
        unknown = sorted(set(overrides) - set(COMPOSER_SETTINGS))
        if unknown:
            raise TypeError(f"generate() got unknown settings {unknown}; allowed: {list(COMPOSER_SETTINGS)}")
        if output_localization and not return_dict_in_generate:
            raise ValueError("output_localization needs return_dict_in_generate=True (the maps go with the sentences)")
        settings = {name: overrides.get(name, getattr(self.config, name)) for name in COMPOSER_SETTINGS}
        changed = self.check_feature_overrides(feature_overrides or {})
        traced = self._traced(pixel_values) if output_localization else None  # one forward serves both
        if traced is None:
            outputs = self.forward(pixel_values)
            activations, image_embeds = outputs.feature_activations.clone(), outputs.image_embeds
        else:
            activations, image_embeds = traced["acts"].detach().clone(), traced["embeds"].detach()
        for fid, value in changed.items():
            activations[:, fid] = value
        features = self.features
        composed = [compose_report(row, features, **settings) for row in activations.float().cpu().tolist()]
        for c in composed:
            for sentence in c["sentences"]:
                touched = [f for f in sentence["feature_ids"] if f in changed]
                if touched:
                    sentence["overridden"] = touched
        if not return_dict_in_generate:
            return [c["report"] for c in composed]
        if output_localization:
            self._attach_maps(traced, composed, activations)
        return SAERadGenerateOutput(
            reports=[c["report"] for c in composed],
            findings=[c["findings"] for c in composed],
            impressions=[c["impression"] for c in composed],
            feature_activations=activations,
            image_embeds=image_embeds,
            sentences=[c["sentences"] for c in composed],
            omitted=[c["omitted"] for c in composed],
        )

    def _attach_maps(self, traced: dict, composed: list, activations: torch.Tensor) -> None:
        """Each sentence's map: Grad-CAM of the sum of its features' activations, each weighted by its activation
        (one backward per distinct feature set of an image, not per feature: an IMPRESSION sentence that repeats a
        FINDINGS one shares its map), and the side read from it."""
        slot_of = [{} for _ in composed]  # per image: feature set -> slot
        for i, c in enumerate(composed):
            for sentence in c["sentences"]:
                slot_of[i].setdefault(tuple(sorted(sentence["feature_ids"])), len(slot_of[i]))
        slots = max((len(s) for s in slot_of), default=0)
        if slots == 0:
            return
        acts = activations.detach()
        traced_acts = traced["acts"].detach()
        directions = torch.zeros(slots, *acts.shape, dtype=acts.dtype)
        for i, sets in enumerate(slot_of):
            for ids, j in sets.items():
                for f in ids:
                    if traced_acts[i, f] > 0:  # a feature switched on by an override has no gradient
                        directions[j, i, f] = acts[i, f]
        maps = self._directional_maps(traced, directions)
        for i, c in enumerate(composed):
            for sentence in c["sentences"]:
                m = maps[i, slot_of[i][tuple(sorted(sentence["feature_ids"]))]]
                sentence["localization"], sentence["side"] = m, map_side(m)

    def localize(
        self, pixel_values: torch.FloatTensor, feature_ids: Optional[list] = None, method: str = "gradcam"
    ) -> torch.Tensor:
        """Where each feature looks: `(batch, n_features, H, W)` maps over the input image, each in [0, 1].

        `gradcam` (default): the gradient of the feature's activation with respect to the backbone's last spatial
        features, averaged per channel, weighting those features (Grad-CAM), upsampled to the image; `gradient`: the
        absolute pixel gradient, smoothed. `feature_ids` defaults to the features active in any image of the batch.
        A feature silent on an image gets an all-zero map there.
        """
        if method not in LOCALIZATION_METHODS:
            raise ValueError(f"method must be one of {LOCALIZATION_METHODS}; got {method!r}")
        traced = self._traced(pixel_values, shortcut=method == "gradcam")
        if feature_ids is None:
            feature_ids = sorted(int(f) for f in (traced["acts"] > 0).any(0).nonzero().flatten())
        return self._maps(traced, feature_ids, method)

    def _traced(self, pixel_values: torch.Tensor, shortcut: bool = True) -> dict:
        """One forward pass that keeps its graph: the activations and what the maps are taken against. For a
        staged CNN with a pooler (ResNet) the graph starts at the last stage's input, so the earlier stages run
        without one (`shortcut`); otherwise it is built from the pixels (the backbone is frozen)."""
        pixels = pixel_values.detach().clone().float().requires_grad_(True)
        pooler = getattr(self.vision_model, "pooler", None)
        stages = getattr(getattr(self.vision_model, "encoder", None), "stages", None)
        if shortcut and isinstance(pooler, nn.Module) and isinstance(stages, nn.ModuleList) and len(stages) > 1:
            with torch.no_grad():
                outputs = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
                pooled = pool_backbone_output(outputs, self.config.pooling, self.config.vision_config)
                embeds = self.sae.normalize(pooled.to(self.sae.W_enc.dtype))
                acts = self.sae.encode(embeds)

            def head(source: torch.Tensor) -> tuple:
                fmap = stages[-1](source)
                outputs = ModelOutput(last_hidden_state=fmap, pooler_output=pooler(fmap))
                pooled = pool_backbone_output(outputs, self.config.pooling, self.config.vision_config)
                embeds = self.sae.normalize(pooled.to(self.sae.W_enc.dtype))
                return embeds, self.sae.encode(embeds)

            source = outputs.hidden_states[-2].detach().float()
            # the maps run `head` once on the features stacked into the batch: one plain backward for all of them
            return {"pixels": None, "source": source, "grid": lambda x: x, "embeds": embeds, "acts": acts,
                    "size": pixel_values.shape[-2:], "head": lambda x: head(x)[1]}
        with torch.enable_grad():
            try:
                outputs = self.vision_model(pixel_values=pixels, output_hidden_states=True)
            except TypeError:  # a backbone without hidden states: its last feature map
                outputs = self.vision_model(pixel_values=pixels)
            source, grid = _feature_map(outputs, self.config.vision_config)
            pooled = pool_backbone_output(outputs, self.config.pooling, self.config.vision_config)
            embeds = self.sae.normalize(pooled.to(self.sae.W_enc.dtype))
            acts = self.sae.encode(embeds)
        return {"pixels": pixels, "source": source, "grid": grid, "embeds": embeds, "acts": acts,
                "size": pixel_values.shape[-2:]}

    def _maps(self, traced: dict, feature_ids: list, method: str = "gradcam") -> torch.Tensor:
        feature_ids = [int(f) for f in feature_ids]
        for fid in feature_ids:
            if not 0 <= fid < self.config.d_sae:
                raise ValueError(f"feature id {fid} is not in [0, d_sae={self.config.d_sae})")
        acts = traced["acts"].detach()
        directions = torch.zeros(len(feature_ids), *acts.shape, dtype=acts.dtype)
        for k, fid in enumerate(feature_ids):
            directions[k, :, fid] = (acts[:, fid] > 0).to(acts.dtype)  # a silent feature's map is empty anyway
        return self._directional_maps(traced, directions, method)

    def _directional_maps(self, traced: dict, directions: torch.Tensor, method: str = "gradcam") -> torch.Tensor:
        """`(batch, k, H, W)` maps, each in [0, 1], of the scores `directions[k, i] . acts[i]` (see
        `_directional_grads`); a direction that is zero on an image gives an empty map there."""
        height, width = traced["size"]
        k, batch = directions.shape[:2]
        if k == 0:
            return torch.zeros(batch, 0, height, width)
        if method == "gradient" and traced["pixels"] is None:
            raise ValueError("pixel gradients need the graph from the pixels: trace with shortcut=False")
        target = traced["pixels"] if method == "gradient" else traced["source"]
        grads = _directional_grads(traced, directions, target)  # (k, batch, ...)
        if method == "gradient":
            m = grads.abs().sum(2).reshape(k * batch, 1, height, width)
            m = nn.functional.avg_pool2d(m, 5, stride=1, padding=2)
        else:
            grid = traced["grid"]
            fmap = grid(traced["source"].detach())
            grads = grid(grads.flatten(0, 1)).unflatten(0, (k, batch))
            cam = torch.relu((grads.mean((3, 4), keepdim=True) * fmap[None]).sum(2))  # (k, batch, h, w)
            m = nn.functional.interpolate(cam.flatten(0, 1)[:, None], size=(height, width), mode="bilinear",
                                          align_corners=False)
        maps = m.reshape(k, batch, height, width).transpose(0, 1).detach().float()
        maps[~(directions != 0).any(-1).T] = 0
        peak = maps.flatten(2).max(-1).values.clamp_min(1e-12)
        return maps / peak[:, :, None, None]

    def explain(self, pixel_values: torch.FloatTensor, output_localization: bool = False,
                generated: Optional[SAERadGenerateOutput] = None) -> list:
        """Per image, the active features strongest first: id, description, activation, held-out score, section,
        training firing frequency, exemplar ids, whether the report wrote it (or why not), and with
        `output_localization` its map and side. `generated`: this model's `generate(pixel_values,
        return_dict_in_generate=True)` when the caller has it already (the forward is not run again)."""
        out = generated if generated is not None else self.generate(pixel_values, return_dict_in_generate=True)
        features = self.features
        maps = None
        rows = []
        activations = out.feature_activations.float().cpu()
        for i in range(len(activations)):
            active = [int(f) for f in activations[i].nonzero().flatten()]
            active.sort(key=lambda f: (-float(activations[i, f]), f))
            written = {f for s in out.sentences[i] for f in s["feature_ids"]}
            reasons = {o["feature_id"]: o["reason"] for o in out.omitted[i]}
            if output_localization and active:
                maps = self.localize(pixel_values[i : i + 1], feature_ids=active)[0]
            table = []
            for k, fid in enumerate(active):
                feature = features.get(fid, {})
                row = {"feature_id": fid, "activation": float(activations[i, fid]),
                       "description": feature.get("description", ""), "score": feature.get("score"),
                       "section": feature.get("section"), "frequency": feature.get("frequency"),
                       "exemplars": list(feature.get("exemplars", [])),
                       "written": fid in written, "omitted_reason": reasons.get(fid)}
                if output_localization:
                    row["localization"], row["side"] = maps[k], map_side(maps[k])
                table.append(row)
            rows.append(table)
        return rows

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """Save weights and config (safetensors), the image processor and the feature dictionary."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("SAE-Rad saves safetensors only; drop safe_serialization=False")
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        processor = as_checked_processor(self.image_processor if self.image_processor is not None
                                         else default_image_processor(self.config.vision_config))
        processor.save_pretrained(save_directory)
        if self.feature_dictionary is not None:
            fd, tmp = tempfile.mkstemp(dir=save_directory, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.feature_dictionary, f, indent=1)
            os.replace(tmp, os.path.join(save_directory, FEATURE_DICTIONARY_NAME))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *model_args, **kwargs):
        """Load weights (safetensors only) and config, then the feature dictionary when the folder or repo has one."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("SAE-Rad loads safetensors only; pickled weights are refused")
        kwargs["use_safetensors"] = True
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "force_download", "proxies", "token", "revision",
                                             "local_files_only", "subfolder") if k in kwargs}
        _refuse_pickled_weights(pretrained_model_name_or_path, hub_kwargs)
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                                  output_loading_info=True, **kwargs)
        except RuntimeError as err:  # e.g. config.json's d_sae disagrees with the weights
            if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
                raise
            lines = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
            raise ValueError(f"{pretrained_model_name_or_path}: the weights do not fit config.json "
                             f"({lines[0] if lines else 'size mismatch; d_sae or the backbone differ'})") from None
        # transformers re-initialises mismatched or missing weights with a warning: a model that would write reports
        # from random weights is refused instead
        mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys", [])]
        if mismatched or info.get("missing_keys"):
            keys = ", ".join(sorted(mismatched or info["missing_keys"])[:3])
            raise ValueError(f"{pretrained_model_name_or_path}: the weights do not fit config.json "
                             f"({'size mismatch' if mismatched else 'missing'}: {keys})")
        path = cached_file(
            pretrained_model_name_or_path, FEATURE_DICTIONARY_NAME, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False, **hub_kwargs,
        )
        if path is not None:
            model.load_feature_dictionary(path)
        else:
            logger.warning(f"{pretrained_model_name_or_path} has no {FEATURE_DICTIONARY_NAME}: generate() is disabled")
        return (model, info) if wants_info else model


SAERadConfig.register_for_auto_class()
SAERadModel.register_for_auto_class("AutoModel")
SAERadImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "SAERadGenerateOutput",
    "SAERadImageProcessor",
    "SAERadModel",
    "SAERadOutput",
    "SAERadPreTrainedModel",
    "SparseAutoencoder",
    "compose_report",
    "map_side",
    "pool_backbone_output",
    "validate_feature_dictionary",
]
