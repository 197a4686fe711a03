# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""Familiarity: is an image like the images the model learnt from? The per-channel mean and standard deviation of an
early backbone stage (a staged CNN's first stage, a ViT's patch tokens at layer `num_hidden_layers // 4`) are
compared with statistics fitted at build time on training images (squared Mahalanobis distance); the threshold is
set on validation images at a stated false-flag rate. Early statistics measure what the image looks like, not what it
shows, so a rare combination of findings stays familiar while a real film, a photograph or noise does not
(docs/familiarity.md measures the alternatives)."""

import json
import os
import tempfile
import threading
from typing import Optional, Union

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

FAMILIARITY_NAME = "familiarity.safetensors"
FAMILIARITY_FORMAT_VERSION = 1
SIGNAL = "early_statistics_mahalanobis"
ON_UNFAMILIAR = ("warn", "withhold", "ignore")
METADATA_KEYS = ("signal", "layer", "threshold", "false_flag_rate", "shrinkage", "n_fit", "n_validation",
                 "validation_flag_rate", "fit_source", "validation_source")
UNAVAILABLE = ("this model folder has no familiarity calibration (familiarity.safetensors, written by `saerad build`): "
               "the familiarity check is unavailable")


def default_layer(vision_config) -> int:
    """The hidden-state index whose statistics are compared: a staged CNN's first stage (1), a ViT's layer
    `num_hidden_layers // 4` (at least 1)."""
    if getattr(vision_config, "hidden_sizes", None) is not None:
        return 1
    return max(1, int(getattr(vision_config, "num_hidden_layers", 4) or 4) // 4)


def layer_module(vision_model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is `hidden_states[layer]` (0: the embeddings; i: stage or block i - 1)."""
    encoder = getattr(vision_model, "encoder", None)
    if layer == 0:
        for name in ("embedder", "embeddings"):
            if isinstance(getattr(vision_model, name, None), nn.Module):
                return getattr(vision_model, name)
    for name in ("stages", "layer", "layers"):
        blocks = getattr(encoder, name, None)
        if isinstance(blocks, nn.ModuleList) and 1 <= layer <= len(blocks):
            return blocks[layer - 1]
    raise ValueError(f"familiarity layer {layer} is not a stage or block of this {type(vision_model).__name__}")


def statistics(hidden: torch.Tensor, vision_config) -> torch.Tensor:
    """`(batch, 2 * channels)`: per-channel mean and standard deviation over the spatial positions (a CNN's
    `(batch, C, H, W)` map) or the patch tokens (a ViT's `(batch, tokens, C)`, CLS and registers left out)."""
    hidden = hidden.detach().float()
    if hidden.dim() == 4:
        flat = hidden.flatten(2)  # (batch, C, H * W)
    else:
        registers = getattr(vision_config, "num_register_tokens", 0) or 0
        flat = hidden[:, 1 + registers :].transpose(1, 2)  # (batch, C, patches)
    return torch.cat([flat.mean(2), flat.std(2)], dim=1).cpu()


class _Captured(Exception):
    """Raised by the hook to stop a forward pass once the early layer has been read."""


class capture_statistics:
    """Context manager: while open, every forward of `vision_model` stores the early statistics of hidden state
    `layer` (an int, or a calibration's; None: nothing) in `.value`; `stop=True` ends the forward right after it.
    Only forwards of the thread that opened it count: a Space serving two requests at once runs two forwards."""

    def __init__(self, vision_model: nn.Module, layer: Union[int, dict, None], vision_config, stop: bool = False):
        layer = layer["layer"] if isinstance(layer, dict) else layer
        self.vision_model, self.layer, self.vision_config, self.stop = vision_model, layer, vision_config, stop
        self.value: Optional[torch.Tensor] = None
        self._handle, self._thread = None, threading.get_ident()

    def _hook(self, module, inputs, output):
        if threading.get_ident() != self._thread:
            return
        hidden = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
        self.value = statistics(hidden, self.vision_config)
        if self.stop:
            raise _Captured

    def __enter__(self) -> "capture_statistics":
        if self.layer is not None:
            self._handle = layer_module(self.vision_model, self.layer).register_forward_hook(self._hook)
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if self._handle is not None:
            self._handle.remove()
        return kind is _Captured


@torch.no_grad()
def early_statistics(vision_model: nn.Module, pixel_values: torch.Tensor, layer: int, vision_config) -> torch.Tensor:
    """The early statistics of a batch, the backbone run only as far as `layer`."""
    with capture_statistics(vision_model, layer, vision_config, stop=True) as captured:
        vision_model(pixel_values=pixel_values)
    return captured.value


def fit(stats: torch.Tensor, shrinkage: float = 1e-2) -> tuple:
    """Mean and precision of `(n, d)` statistics; the covariance shrunk towards `shrinkage` x its mean diagonal (a
    few hundred rows estimate 48-1536 dimensions)."""
    x = stats.double()
    mean = x.mean(0)
    cov = torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1])
    cov = cov + shrinkage * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(x.shape[1], dtype=x.dtype)
    return mean.float(), torch.linalg.inv(cov).float()


def mahalanobis(stats: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of each row of `stats` to the fitted statistics."""
    d = stats.float() - mean
    return ((d @ precision) * d).sum(1)


def calibrate(fit_stats: torch.Tensor, validation_stats: torch.Tensor, layer: int, false_flag_rate: float = 0.01,
              shrinkage: float = 1e-2, fit_source: str = "", validation_source: str = "") -> dict:
    """A calibration: statistics fitted on `fit_stats` (training images), the threshold the `1 - false_flag_rate`
    quantile of the validation images' scores."""
    if not 0 < false_flag_rate < 1:
        raise ValueError(f"false_flag_rate must be in (0, 1); got {false_flag_rate}")
    if len(fit_stats) < 2 or len(validation_stats) < 1:
        raise ValueError(f"familiarity needs >= 2 fit rows and >= 1 validation row; got {len(fit_stats)} and "
                         f"{len(validation_stats)}")
    mean, precision = fit(fit_stats, shrinkage)
    scores = mahalanobis(validation_stats, mean, precision)
    threshold = float(torch.quantile(scores.double(), 1 - false_flag_rate))
    return {"mean": mean, "precision": precision, "signal": SIGNAL, "layer": int(layer), "threshold": threshold,
            "false_flag_rate": float(false_flag_rate), "shrinkage": float(shrinkage), "n_fit": len(fit_stats),
            "n_validation": len(validation_stats),
            "validation_flag_rate": float((scores > threshold).float().mean()),
            "fit_source": fit_source, "validation_source": validation_source}


def save_calibration(calibration: Optional[dict], save_directory: Union[str, os.PathLike]) -> None:
    """Write `familiarity.safetensors` (mean, precision; the rest as metadata) atomically; nothing without one."""
    from safetensors.torch import save_file

    if calibration is None:
        return
    metadata = {"format_version": str(FAMILIARITY_FORMAT_VERSION)}
    metadata.update({k: json.dumps(calibration[k]) for k in METADATA_KEYS if k in calibration})
    fd, tmp = tempfile.mkstemp(dir=save_directory, suffix=".tmp")
    os.close(fd)
    save_file({"mean": calibration["mean"].contiguous(), "precision": calibration["precision"].contiguous()}, tmp,
              metadata=metadata)
    os.replace(tmp, os.path.join(save_directory, FAMILIARITY_NAME))


def load_calibration(path: Union[str, os.PathLike, None]) -> Optional[dict]:
    """Read a `familiarity.safetensors` (None where a model folder has none: the check is then unavailable, and says
    so); a ValueError names what is wrong."""
    from safetensors import safe_open

    if path is None:
        logger.info(UNAVAILABLE)
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("mean", "precision")}
        values = {k: json.loads(metadata[k]) for k in METADATA_KEYS if k in metadata}
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a familiarity calibration ({str(err).splitlines()[0] if str(err) else err})")
    if metadata.get("format_version") != str(FAMILIARITY_FORMAT_VERSION) or values.get("signal") != SIGNAL:
        raise ValueError(f"{path}: familiarity format {metadata.get('format_version')!r} signal "
                         f"{values.get('signal')!r} is not one this code reads (format 1, {SIGNAL})")
    d = tensors["mean"].shape[0]
    numbers = [values.get(k) for k in ("threshold", "false_flag_rate")]
    if (tensors["mean"].dim() != 1 or tuple(tensors["precision"].shape) != (d, d)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
            or not isinstance(values.get("layer"), int) or isinstance(values.get("layer"), bool)):
        raise ValueError(f"{path}: familiarity calibration malformed (mean (d,), precision (d, d), a numeric "
                         "threshold and false_flag_rate, an integer layer)")
    return {**values, **tensors}


def warning_text(score: float, threshold: float, false_flag_rate: float) -> str:
    """The sentence a flagged image's report carries."""
    return (f"This image is unlike the images this model learnt from (familiarity score {score / threshold:.1f}x the "
            f"threshold, which flags {false_flag_rate:.0%} of validation images): its report may describe findings "
            "that are not there.")


@torch.no_grad()
def assess(stats: Optional[torch.Tensor], calibration: Optional[dict], sae: nn.Module,
           image_embeds: torch.Tensor) -> list:
    """Per image: `available`, `score`, `threshold`, `unfamiliar`, `signals` (the score, the SAE's relative
    reconstruction error and L0 of the image's own activations, the latter two informational) and `warning` (a
    sentence, or None)."""
    embeds = image_embeds.detach().float()
    activations = sae.encode(image_embeds.detach())  # the image's own, whatever feature_overrides set later
    error = (embeds - sae.decode(activations).float()).norm(dim=1)
    reconstruction_error = (error / embeds.norm(dim=1).clamp_min(1e-8)).cpu()
    l0 = (activations > 0).sum(1).cpu()
    rows = []
    scores = None
    if calibration is not None and stats is not None:
        if stats.shape[1] != calibration["mean"].shape[0]:
            raise ValueError(f"the familiarity calibration has {calibration['mean'].shape[0]} statistics but hidden "
                             f"state {calibration['layer']} of this backbone gives {stats.shape[1]}; rebuild the model "
                             "folder with `saerad build`")
        scores = mahalanobis(stats, calibration["mean"], calibration["precision"]).tolist()
    for i in range(len(l0)):
        signals = {"reconstruction_error": float(reconstruction_error[i]), "l0": int(l0[i])}
        if scores is None:
            rows.append({"available": False, "score": None, "threshold": None, "unfamiliar": None,
                         "signals": signals, "warning": None, "note": UNAVAILABLE})
            continue
        score, threshold = float(scores[i]), float(calibration["threshold"])
        unfamiliar = score > threshold
        rows.append({"available": True, "score": score, "threshold": threshold, "unfamiliar": unfamiliar,
                     "signals": {SIGNAL: score, **signals},
                     "warning": warning_text(score, threshold, calibration["false_flag_rate"]) if unfamiliar else None})
    return rows


def apply_on_unfamiliar(composed: list, familiarity: list, on_unfamiliar: str, log: bool = False) -> list:
    """With `on_unfamiliar="withhold"`, empty the composed report of each flagged image (its `familiarity` entry says
    why); with `"ignore"`, drop the warnings; with `"warn"`, keep both, and with `log` (a caller that gets the reports
    alone) log how many were flagged."""
    for c, f in zip(composed, familiarity):
        f["withheld"] = bool(on_unfamiliar == "withhold" and f["unfamiliar"])
        if on_unfamiliar == "ignore":
            f["warning"] = None
        if f["withheld"]:
            c.update(report="", findings="", impression="", sentences=[])
    flagged = sum(bool(f["warning"]) for f in familiarity)
    if log and flagged:
        logger.warning(f"{flagged} of {len(familiarity)} images are unlike the images this model learnt from: their "
                       "reports may describe findings that are not there")
    return familiarity


def check_on_unfamiliar(on_unfamiliar: str) -> None:
    """Refuse an unknown `on_unfamiliar` before any compute."""
    if on_unfamiliar not in ON_UNFAMILIAR:
        raise ValueError(f"on_unfamiliar must be one of {ON_UNFAMILIAR}; got {on_unfamiliar!r}")


class familiarity_check(capture_statistics):
    """`generate`'s check around its one forward pass: refuses an unknown `on_unfamiliar` before any compute, reads
    the early statistics while open, then `apply` assesses each image and applies `on_unfamiliar` to the reports."""

    def __init__(self, model: nn.Module, on_unfamiliar: str = "warn"):
        check_on_unfamiliar(on_unfamiliar)
        super().__init__(model.vision_model, model.familiarity, model.config.vision_config)
        self.model, self.on_unfamiliar = model, on_unfamiliar

    def apply(self, composed: list, image_embeds: torch.Tensor, log: bool = False) -> list:
        """Per image, the `familiarity` entry of `generate` (see `assess`), its report withheld where asked."""
        familiarity = assess(self.value, self.model.familiarity, self.model.sae, image_embeds)
        return apply_on_unfamiliar(composed, familiarity, self.on_unfamiliar, log)


__all__ = ["FAMILIARITY_NAME", "ON_UNFAMILIAR", "apply_on_unfamiliar", "assess", "calibrate", "capture_statistics",
           "default_layer", "early_statistics", "familiarity_check", "load_calibration", "save_calibration",
           "statistics"]
