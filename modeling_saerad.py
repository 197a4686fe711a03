# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad: a frozen vision backbone, a sparse autoencoder over its pooled embedding, and a deterministic composer
that writes a report from the descriptions of the active features (arXiv 2410.03334)."""

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput, logging

try:  # as remote code (transformers_modules) the files are siblings in a package
    from .composition_saerad import (
        FEATURE_DICTIONARY_NAME,
        check_generate_arguments,
        compose_reports,
        explain_rows,
        load_feature_dictionary,
    )
    from .configuration_saerad import SAERadConfig
    from .familiarity_saerad import (
        FAMILIARITY_NAME,
        familiarity_check,
        load_calibration,
        save_calibration,
    )
    from .image_processing_saerad import as_checked_processor, default_image_processor
    from .localization_saerad import active_features, attach_sentence_maps, feature_maps, map_side, trace
except ImportError:  # installed with saerad, they are top-level modules
    from composition_saerad import (
        FEATURE_DICTIONARY_NAME,
        check_generate_arguments,
        compose_reports,
        explain_rows,
        load_feature_dictionary,
    )
    from configuration_saerad import SAERadConfig
    from familiarity_saerad import (
        FAMILIARITY_NAME,
        familiarity_check,
        load_calibration,
        save_calibration,
    )
    from image_processing_saerad import as_checked_processor, default_image_processor
    from localization_saerad import active_features, attach_sentence_maps, feature_maps, map_side, trace

logger = logging.get_logger(__name__)
HUB_KWARGS = ("cache_dir", "force_download", "token", "revision", "local_files_only", "subfolder")
NO_DICTIONARY = ("this SAE-Rad model has no feature dictionary, so it cannot write reports (forward still works); add "
                 f"one with model.load_feature_dictionary(...) or a {FEATURE_DICTIONARY_NAME} in the model folder "
                 "(made by `saerad interpret`, assembled by `saerad build`)")


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
            `activation`, `reason` (a sentence) and `code` (`"no_description"`, `"weak"`, `"low_score"`,
            `"low_precision"`, `"max_features"` or `"contradicted"`).
        familiarity (`list[dict]`): per image, whether it is like the training images: `available` (False for a
            model without calibration, with a `note`), `score`, `threshold`, `unfamiliar`, `signals`, `warning` and
            `withheld`. `generate(on_unfamiliar=...)`: `"warn"` (default) writes a flagged image's report with a
            `warning` sentence, `"withhold"` leaves its report empty (`withheld`), `"ignore"` writes it without one.
    """

    reports: Optional[list] = None
    findings: Optional[list] = None
    impressions: Optional[list] = None
    feature_activations: Optional[torch.FloatTensor] = None
    image_embeds: Optional[torch.FloatTensor] = None
    sentences: Optional[list] = None
    omitted: Optional[list] = None
    familiarity: Optional[list] = None


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



WEIGHTS_INDEX = "model.safetensors.index.json"


def _optional_file(name_or_path: Union[str, os.PathLike], filename: str, hub_kwargs: dict) -> Optional[str]:
    """The local path of `filename` in a model folder or Hub repo, or None where it has none (or, offline, where the
    cache has none)."""
    source, subfolder = os.fspath(name_or_path), hub_kwargs.get("subfolder") or ""
    if os.path.isdir(source):
        path = os.path.join(source, subfolder, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(source, filename, **{k: v for k, v in hub_kwargs.items() if v is not None})
    except EntryNotFoundError:  # also LocalEntryNotFoundError: offline, not in the cache
        return None


def _calibration(name_or_path: Union[str, os.PathLike], hub_kwargs: dict) -> Optional[dict]:
    """The familiarity calibration of a model folder or Hub repo; None (the check unavailable) in an older one."""
    return load_calibration(_optional_file(name_or_path, FAMILIARITY_NAME, hub_kwargs))


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
    index = _optional_file(source, WEIGHTS_INDEX, hub_kwargs)
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


def _refuse_mismatch(source: Union[str, os.PathLike], err: Optional[RuntimeError], info: Optional[dict] = None) -> None:
    """Refuse weights that do not fit config.json: transformers raises on a size mismatch, or re-initialises
    mismatched or missing weights with a warning; a model that would write reports from random weights is refused."""
    if err is not None:
        if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
            raise err
        lines = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise ValueError(f"{source}: the weights do not fit config.json "
                         f"({lines[0] if lines else 'size mismatch; d_sae or the backbone differ'})") from None
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys", [])]
    if mismatched or info.get("missing_keys"):
        keys = ", ".join(sorted(mismatched or info["missing_keys"])[:3])
        raise ValueError(f"{source}: the weights do not fit config.json "
                         f"({'size mismatch' if mismatched else 'missing'}: {keys})")


def _custom_pipelines() -> dict:
    """config.json's `custom_pipelines`: `pipeline("radiology-report", model=..., trust_remote_code=True)`."""
    try:  # a relative import: save_pretrained and the Hub's loader copy the pipeline's file with this one
        from .pipeline_saerad import CUSTOM_PIPELINES
    except ImportError:
        from pipeline_saerad import CUSTOM_PIPELINES
    return CUSTOM_PIPELINES


class SAERadPreTrainedModel(PreTrainedModel):
    familiarity: Optional[dict] = None  # the calibration in familiarity.safetensors (`saerad build`), per instance
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

    def encode_backbone_output(self, outputs: ModelOutput) -> tuple:
        """The one encode path: backbone output -> pooled, cast to the SAE's dtype, normalised (the SAE input,
        `(batch, d_in)`) -> feature activations `(batch, d_sae)`."""
        pooled = pool_backbone_output(outputs, self.config.pooling, self.config.vision_config)
        image_embeds = self.sae.normalize(pooled.to(self.sae.W_enc.dtype))
        return image_embeds, self.sae.encode(image_embeds)

    def forward(self, pixel_values: torch.FloatTensor, **kwargs) -> SAERadOutput:
        image_embeds, activations = self.encode_backbone_output(self.vision_model(pixel_values=pixel_values))
        return SAERadOutput(
            image_embeds=image_embeds, feature_activations=activations, reconstruction=self.sae.decode(activations)
        )

    def load_feature_dictionary(self, data_or_path: Union[dict, str, os.PathLike]) -> None:
        """Attach a feature dictionary (a dict or a path to `feature_dictionary.json`) after validating it."""
        self.feature_dictionary = load_feature_dictionary(data_or_path, self.config.d_sae)

    @property
    def features(self) -> dict:
        """`{feature_id: feature}` of the attached dictionary (empty without one)."""
        if self.feature_dictionary is None:
            return {}
        return {f["id"]: f for f in self.feature_dictionary["features"]}

    def check_feature_overrides(self, feature_overrides: dict) -> dict:
        """`{feature_id: value}` checked against this model (public, so callers can refuse before any compute)."""
        return check_generate_arguments(self.config, self.features, {}, feature_overrides)[1]

    @torch.no_grad()
    def generate(self, pixel_values: torch.FloatTensor, return_dict_in_generate: bool = False,
                 output_localization: bool = False, feature_overrides: Optional[dict] = None,
                 on_unfamiliar: str = "warn", **overrides) -> Union[list, SAERadGenerateOutput]:
        """Write one report per image; `overrides` replace the config's composer settings for this call.

        `feature_overrides={feature_id: value}` sets features before composition (0 switches one off, a value
        switches one on); the sentences they touch list them under `overridden`. `output_localization=True` (with
        `return_dict_in_generate`) attaches to each sentence the activation-weighted map of its features over the
        input image (`localization`, `(H, W)` in [0, 1]) and the side read from it (`side`).
        """
        if self.feature_dictionary is None:
            raise ValueError(NO_DICTIONARY)
        settings, changed = check_generate_arguments(self.config, self.features, overrides, feature_overrides or {})
        if output_localization and not return_dict_in_generate:
            raise ValueError("output_localization needs return_dict_in_generate=True (the maps go with the sentences)")
        with familiarity_check(self, on_unfamiliar) as check:
            if output_localization:  # one forward serves the report, its maps and the familiarity check
                traced = trace(self.vision_model, self.encode_backbone_output, pixel_values, self.config.vision_config)
                image_embeds, activations = traced.embeds.detach(), traced.acts.detach().clone()
            else:
                image_embeds, activations = self.encode_backbone_output(self.vision_model(pixel_values=pixel_values))
        for fid, value in changed.items():
            activations[:, fid] = value
        composed = compose_reports(activations.float().cpu().tolist(), self.features, changed, **settings)
        familiarity = check.apply(composed, image_embeds, log=not return_dict_in_generate)
        if not return_dict_in_generate:
            return [c["report"] for c in composed]
        if output_localization:
            attach_sentence_maps(traced, composed, activations)
        return SAERadGenerateOutput(
            reports=[c["report"] for c in composed], findings=[c["findings"] for c in composed],
            impressions=[c["impression"] for c in composed], feature_activations=activations,
            image_embeds=image_embeds, sentences=[c["sentences"] for c in composed],
            omitted=[c["omitted"] for c in composed], familiarity=familiarity)

    def localize(self, pixel_values: torch.FloatTensor, feature_ids: Optional[list] = None,
                 method: str = "gradcam") -> torch.Tensor:
        """Where each feature looks: `(batch, n_features, H, W)` maps over the input image, each in [0, 1].

        `gradcam` (default): the gradient of the feature's activation with respect to the backbone's last spatial
        features, averaged per channel, weighting those features (Grad-CAM), upsampled to the image; `gradient`: the
        absolute pixel gradient, smoothed. `feature_ids` defaults to the features active in any image of the batch.
        A feature silent on an image gets an all-zero map there.
        """
        traced = trace(self.vision_model, self.encode_backbone_output, pixel_values, self.config.vision_config,
                       shortcut=method == "gradcam")
        ids = active_features(traced) if feature_ids is None else feature_ids
        return feature_maps(traced, ids, self.config.d_sae, method)

    def explain(self, pixel_values: torch.FloatTensor, output_localization: bool = False,
                generated: Optional[SAERadGenerateOutput] = None) -> list:
        """Per image, the active features strongest first: id, description, activation, held-out score, section,
        training firing frequency, exemplar ids, whether the report wrote it (or why not), and with
        `output_localization` its map and side. `generated`: this model's `generate(pixel_values,
        return_dict_in_generate=True)` when the caller has it already (the forward is not run again)."""
        out = generated if generated is not None else self.generate(pixel_values, return_dict_in_generate=True)
        rows = explain_rows(out.feature_activations.float().cpu().tolist(), out.sentences, out.omitted, self.features)
        for i, table in enumerate(rows if output_localization else []):
            if not table:  # nothing fired: no map to take
                continue
            maps = self.localize(pixel_values[i : i + 1], feature_ids=[r["feature_id"] for r in table])[0]
            for row, m in zip(table, maps):
                row["localization"], row["side"] = m, map_side(m)
        return rows

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """Save weights and config (safetensors), the image processor, the feature dictionary and the pipeline."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("SAE-Rad saves safetensors only; drop safe_serialization=False")
        self.config.custom_pipelines = _custom_pipelines()
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        processor = self.image_processor or default_image_processor(self.config.vision_config)
        as_checked_processor(processor).save_pretrained(save_directory)
        if self.feature_dictionary is not None:
            fd, tmp = tempfile.mkstemp(dir=save_directory, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.feature_dictionary, f, indent=1)
            os.replace(tmp, os.path.join(save_directory, FEATURE_DICTIONARY_NAME))
        save_calibration(self.familiarity, save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *model_args, **kwargs):
        """Load weights (safetensors only) and config, then the feature dictionary when the folder or repo has one."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("SAE-Rad loads safetensors only; pickled weights are refused")
        kwargs["use_safetensors"] = True
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        _refuse_pickled_weights(pretrained_model_name_or_path, hub_kwargs)
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                                  output_loading_info=True, **kwargs)
        except RuntimeError as err:  # e.g. config.json's d_sae disagrees with the weights
            _refuse_mismatch(pretrained_model_name_or_path, err)
        _refuse_mismatch(pretrained_model_name_or_path, None, info)
        path = _optional_file(pretrained_model_name_or_path, FEATURE_DICTIONARY_NAME, hub_kwargs)
        if path is not None:
            model.load_feature_dictionary(path)
        else:
            logger.warning(f"{pretrained_model_name_or_path} has no {FEATURE_DICTIONARY_NAME}: generate() is disabled")
        model.familiarity = _calibration(pretrained_model_name_or_path, hub_kwargs)
        return (model, info) if wants_info else model


SAERadConfig.register_for_auto_class()
SAERadModel.register_for_auto_class("AutoModel")

__all__ = [
    "SAERadGenerateOutput",
    "SAERadModel",
    "SAERadOutput",
    "SAERadPreTrainedModel",
    "SparseAutoencoder",
    "pool_backbone_output",
]
