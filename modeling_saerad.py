# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad: a frozen vision backbone, a sparse autoencoder over its pooled embedding, and a deterministic composer
that writes a report from the descriptions of the active features (arXiv 2410.03334)."""

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
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
            `"impression"`), anatomical `section`, and the `feature_ids` and `activations` that produced it.
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

    def __init__(self, config: SAERadConfig):
        super().__init__()
        self.architecture = config.sae_architecture
        self.k = config.k
        self.input_scale = config.input_scale
        d_in, d_sae = config.d_in, config.d_sae
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
        if config.center_inputs:
            self.register_buffer("input_mean", torch.zeros(d_in))
        else:
            self.input_mean = None

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


def validate_feature_dictionary(data: Any, d_sae: int, source: str = "feature dictionary") -> dict:
    """Check a feature dictionary against the schema; return it with features sorted by id."""

    def fail(where: str, problem: str):
        raise ValueError(f"{source}: {where} {problem}")

    if not isinstance(data, dict):
        fail("top level", f"must be a JSON object; got {type(data).__name__}")
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
        if not isinstance(feature.get("description"), str):
            fail(f"{where}.description", "must be a string")
        if feature.get("section") not in SECTIONS:
            fail(f"{where}.section", f"must be one of {SECTIONS}; got {feature.get('section')!r}")
        findings = feature.get("findings", [])
        if not isinstance(findings, list):
            fail(f"{where}.findings", "must be a list")
        for j, finding in enumerate(findings):
            if not isinstance(finding, dict) or not isinstance(finding.get("label"), str):
                fail(f"{where}.findings[{j}].label", "must be a string")
            if finding.get("status") not in FINDING_STATUSES:
                got = finding.get("status")
                fail(f"{where}.findings[{j}].status", f"must be one of {FINDING_STATUSES}; got {got!r}")
            for key in ("laterality", "severity"):
                if finding.get(key) is not None and not isinstance(finding[key], str):
                    fail(f"{where}.findings[{j}].{key}", "must be a string or null")
        for key in ("score", "frequency"):
            value = feature.get(key)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and (not is_number or math.isnan(value)):
                fail(f"{where}.{key}", f"must be a number or null; got {value!r}")
        exemplars = feature.get("exemplars", [])
        if not isinstance(exemplars, list) or not all(isinstance(e, str) for e in exemplars):
            fail(f"{where}.exemplars", "must be a list of strings")
    return {**data, "features": sorted(features, key=lambda f: f["id"])}


def _split_sentences(text: str) -> list:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text.strip()) if s.strip()]


def _normalize_sentence(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


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


def _findings_key(findings: list) -> tuple:
    return tuple(sorted((f["label"], f["status"], f.get("laterality"), f.get("severity")) for f in findings))


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
            code, reason = "low_score", f"score {feature.get('score')} below min_feature_score {min_feature_score}"
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
            for text in _split_sentences(feature["description"]):
                norm = _normalize_sentence(text)
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


def default_image_processor(vision_config):
    """An image processor for a backbone config: resize and centre-crop to its image size, grayscale to RGB."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import BitImageProcessor as processor_class
    else:
        from transformers import BitImageProcessorPil as processor_class
    size = getattr(vision_config, "image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return processor_class(
        do_resize=True, size={"shortest_edge": size}, do_center_crop=True, crop_size={"height": size, "width": size},
        do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


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
        self.sae = SparseAutoencoder(config)
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
            try:
                with open(data_or_path, encoding="utf-8") as f:
                    data_or_path = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{source}: not valid JSON ({err})") from None
        self.feature_dictionary = validate_feature_dictionary(data_or_path, self.config.d_sae, source)

    @property
    def features(self) -> dict:
        """`{feature_id: feature}` of the attached dictionary (empty without one)."""
        if self.feature_dictionary is None:
            return {}
        return {f["id"]: f for f in self.feature_dictionary["features"]}

    @torch.no_grad()
    def generate(
        self, pixel_values: torch.FloatTensor, return_dict_in_generate: bool = False, **overrides
    ) -> Union[list, SAERadGenerateOutput]:
        """Write one report per image; `overrides` replace the config's composer settings for this call."""
        if self.feature_dictionary is None:
            raise ValueError(
                "this SAE-Rad model has no feature dictionary, so it cannot write reports (forward still works); "
                f"add one with model.load_feature_dictionary(...) or a {FEATURE_DICTIONARY_NAME} in the model folder "
                "(made by `saerad interpret`, assembled by `saerad build`)"
            )
        unknown = sorted(set(overrides) - set(COMPOSER_SETTINGS))
        if unknown:
            raise TypeError(f"generate() got unknown settings {unknown}; allowed: {list(COMPOSER_SETTINGS)}")
        settings = {name: overrides.get(name, getattr(self.config, name)) for name in COMPOSER_SETTINGS}
        outputs = self.forward(pixel_values)
        activations = outputs.feature_activations
        features = self.features
        composed = [compose_report(row, features, **settings) for row in activations.float().cpu().tolist()]
        if not return_dict_in_generate:
            return [c["report"] for c in composed]
        return SAERadGenerateOutput(
            reports=[c["report"] for c in composed],
            findings=[c["findings"] for c in composed],
            impressions=[c["impression"] for c in composed],
            feature_activations=activations,
            image_embeds=outputs.image_embeds,
            sentences=[c["sentences"] for c in composed],
            omitted=[c["omitted"] for c in composed],
        )

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """Save weights and config (safetensors), the image processor and the feature dictionary."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("SAE-Rad saves safetensors only; drop safe_serialization=False")
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        processor = self.image_processor or default_image_processor(self.config.vision_config)
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
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        path = cached_file(
            pretrained_model_name_or_path, FEATURE_DICTIONARY_NAME, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False, **hub_kwargs,
        )
        if path is not None:
            model.load_feature_dictionary(path)
        else:
            logger.warning(f"{pretrained_model_name_or_path} has no {FEATURE_DICTIONARY_NAME}: generate() is disabled")
        return model


SAERadConfig.register_for_auto_class()
SAERadModel.register_for_auto_class("AutoModel")

__all__ = [
    "SAERadGenerateOutput",
    "SAERadModel",
    "SAERadOutput",
    "SAERadPreTrainedModel",
    "SparseAutoencoder",
    "compose_report",
    "pool_backbone_output",
    "validate_feature_dictionary",
]
