# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""SAE-Rad configuration: a frozen vision backbone, a sparse autoencoder and a report composer."""

import math
import re
from typing import Optional, Union

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

SAERAD_VERSION = "0.1.0"
POOLINGS = ("cls", "mean", "cls_mean", "max")
MAX_TEXT_CHARS = 2000  # a description's limit in the feature dictionary: normal_impression is one more sentence
MAX_SAE_WEIGHTS = 1 << 28  # d_in x d_sae per matrix (1 GiB in float32): RAD-DINO x64 is 3.8e7; a config is no bomb
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # also refused in descriptions: no ANSI escapes, no NUL


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    """A finite number (not a bool): inf and NaN settings gave empty reports with no reason."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
SAE_ARCHITECTURES = ("gated", "topk", "jumprelu", "relu")

# RAD-DINO (microsoft/rad-dino) is a DINOv2 ViT-B/14 at 518 px.
RAD_DINO_GEOMETRY = {
    "model_type": "dinov2",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 14,
    "image_size": 518,
}


def backbone_width(vision_config: PretrainedConfig) -> int:
    """Width of one pooled token of a vision backbone config."""
    hidden_size = getattr(vision_config, "hidden_size", None)
    if hidden_size is None and getattr(vision_config, "hidden_sizes", None):
        hidden_size = vision_config.hidden_sizes[-1]  # convolutional backbones (ConvNeXt, ResNet)
    if not isinstance(hidden_size, int):
        raise ValueError(
            f"vision_config ({type(vision_config).__name__}) has no integer hidden_size or hidden_sizes; "
            "pass a transformers vision backbone config"
        )
    return hidden_size


def _check_composer(min_activation, max_report_features, min_feature_score, normal_impression) -> None:
    """Refuse composer settings of the wrong type or out of bounds."""
    if not _real(min_activation) or not min_activation >= 0:
        raise ValueError(f"min_activation must be a finite number >= 0; got {min_activation!r}")
    if not _whole(max_report_features) or max_report_features < 1:
        raise ValueError(f"max_report_features must be a positive integer; got {max_report_features!r}")
    if min_feature_score is not None and not _real(min_feature_score):
        raise ValueError(f"min_feature_score must be a finite number or null; got {min_feature_score!r}")
    if not isinstance(normal_impression, str):
        raise ValueError(f"normal_impression must be a string; got {type(normal_impression).__name__}")
    if len(normal_impression) > MAX_TEXT_CHARS or _CONTROL.search(normal_impression):
        raise ValueError(f"normal_impression must be at most {MAX_TEXT_CHARS} characters of plain text (no control "
                         f"characters or escape sequences); got {len(normal_impression)} characters")


class SAERadConfig(PretrainedConfig):
    r"""
    Configuration of a [`SAERadModel`]: a frozen vision backbone whose pooled embedding is decomposed by a sparse
    autoencoder (SAE) into features, each carrying a radiological description from which the report is composed.

    Args:
        vision_config (`Union[PretrainedConfig, dict]`, *optional*, defaults to RAD-DINO's geometry):
            Config of the vision backbone, a config object or a dict with a `model_type`. The default is a
            `Dinov2Config` shaped like `microsoft/rad-dino` (hidden 768, 12 layers, 12 heads, patch 14, 518 px).
        pooling (`str`, *optional*, defaults to `"cls"`):
            How the backbone output becomes one vector: `"cls"` (the CLS token, as in the paper), `"mean"` (mean of the
            patch tokens), `"cls_mean"` (the two concatenated) or `"max"` (each channel's maximum over the patch tokens,
            so a finding in a few patches is not averaged away).
        d_in (`int`, *optional*):
            Width of the SAE input. It follows from the backbone and the pooling; when given it must agree.
        sae_architecture (`str`, *optional*, defaults to `"gated"`):
            SAE inference form: `"gated"` (the paper's hybrid gated SAE), `"topk"`, `"jumprelu"` (also the inference
            form of BatchTopK) or `"relu"`.
        d_sae (`int`, *optional*):
            Number of SAE features. Defaults to `d_in * expansion_factor`; `d_in * d_sae` is at most 2**28.
        expansion_factor (`int`, *optional*, defaults to 64):
            Dictionary size as a multiple of `d_in`, used when `d_sae` is not given.
        k (`int`, *optional*, defaults to 15):
            Number of active features per image for the `"topk"` architecture; ignored by the others.
        input_scale (`float`, *optional*, defaults to 1.0):
            Factor applied to the pooled embedding (after centring) before the SAE, fixed at build time so that
            inference needs no outside statistics. A finite positive number.
        center_inputs (`bool`, *optional*, defaults to `False`):
            Whether the SAE input is centred by a stored mean (the parameter `sae.input_mean`) before scaling.
        min_activation (`float`, *optional*, defaults to 0.0):
            A feature writes into the report only when its activation is positive and at least this value.
        max_report_features (`int`, *optional*, defaults to 15):
            At most this many features write into one report, strongest first.
        min_feature_score (`float`, *optional*):
            When set, features whose interpretability score is below it (or unknown) are skipped by the composer.
        min_feature_precision (`float`, *optional*):
            When set, features whose held-out precision (the share of their description that the reports of the
            held-out images they fire on state) is below it (or unknown) are skipped by the composer.
        normal_impression (`str`, *optional*, defaults to `"No acute cardiopulmonary abnormality."`):
            The impression written when the active features state no positive or uncertain finding: plain text of at
            most 2,000 characters, without control characters.
        saerad_version (`str`, *optional*, defaults to the installed version):
            Version of saerad that wrote the config.

    Example:

    ```python
    >>> from configuration_saerad import SAERadConfig
    >>> config = SAERadConfig(vision_config={"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2,
    ...     "num_attention_heads": 2, "intermediate_size": 64, "patch_size": 8, "image_size": 32},
    ...     sae_architecture="topk", expansion_factor=2, k=4)
    >>> (config.d_in, config.d_sae)
    (32, 64)
    ```
    """

    model_type = "sae_rad"
    sub_configs = {"vision_config": AutoConfig}

    def __init__(
        self,
        vision_config: Optional[Union[PretrainedConfig, dict]] = None,
        pooling: str = "cls",
        d_in: Optional[int] = None,
        sae_architecture: str = "gated",
        d_sae: Optional[int] = None,
        expansion_factor: int = 64,
        k: int = 15,
        input_scale: float = 1.0,
        center_inputs: bool = False,
        min_activation: float = 0.0,
        max_report_features: int = 15,
        min_feature_score: Optional[float] = None,
        min_feature_precision: Optional[float] = None,
        normal_impression: str = "No acute cardiopulmonary abnormality.",
        saerad_version: str = SAERAD_VERSION,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = dict(RAD_DINO_GEOMETRY)
        if isinstance(vision_config, dict):
            vision_config = dict(vision_config)
            model_type = vision_config.pop("model_type", None)
            if model_type not in CONFIG_MAPPING:
                raise ValueError(
                    f"vision_config needs a known 'model_type' (e.g. 'dinov2'); got {model_type!r}"
                )
            vision_config = CONFIG_MAPPING[model_type](**vision_config)
        if not isinstance(vision_config, PretrainedConfig):
            raise ValueError(
                f"vision_config must be a transformers config or a dict; got {type(vision_config).__name__}"
            )
        self.vision_config = vision_config

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        self.pooling = pooling
        width = backbone_width(vision_config) * (2 if pooling == "cls_mean" else 1)
        if d_in is not None and d_in != width:
            raise ValueError(
                f"d_in={d_in} does not match the backbone: hidden size {backbone_width(vision_config)} "
                f"with pooling {pooling!r} gives d_in={width}; omit d_in or fix it"
            )
        self.d_in = width

        if sae_architecture not in SAE_ARCHITECTURES:
            raise ValueError(f"sae_architecture must be one of {SAE_ARCHITECTURES}; got {sae_architecture!r}")
        self.sae_architecture = sae_architecture
        if not _whole(expansion_factor) or expansion_factor < 1:
            raise ValueError(f"expansion_factor must be a positive integer; got {expansion_factor!r}")
        self.expansion_factor = expansion_factor
        if d_sae is None:
            d_sae = self.d_in * expansion_factor
        if not _whole(d_sae) or d_sae < 1:
            raise ValueError(f"d_sae must be a positive integer; got {d_sae!r}")
        if self.d_in * d_sae > MAX_SAE_WEIGHTS:
            raise ValueError(f"d_sae={d_sae} with d_in={self.d_in} makes {self.d_in * d_sae} weights per SAE matrix; "
                             f"the limit is {MAX_SAE_WEIGHTS}")
        self.d_sae = d_sae
        if not _whole(k) or k < 1 or (sae_architecture == "topk" and k > d_sae):
            raise ValueError(f"k must be an integer in [1, d_sae={d_sae}]; got {k!r}")
        self.k = k

        if not _real(input_scale) or not input_scale > 0:
            raise ValueError(f"input_scale must be a finite positive number; got {input_scale!r}")
        self.input_scale = float(input_scale)
        self.center_inputs = bool(center_inputs)

        _check_composer(min_activation, max_report_features, min_feature_score, normal_impression)
        self.min_activation = float(min_activation)
        self.max_report_features = max_report_features
        self.min_feature_score = None if min_feature_score is None else float(min_feature_score)
        if min_feature_precision is not None and not _real(min_feature_precision):
            raise ValueError(f"min_feature_precision must be a finite number or null; got {min_feature_precision!r}")
        self.min_feature_precision = None if min_feature_precision is None else float(min_feature_precision)
        self.normal_impression = normal_impression
        self.saerad_version = saerad_version
        super().__init__(**kwargs)


__all__ = ["SAERadConfig"]
