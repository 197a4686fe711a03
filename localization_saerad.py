# Copyright 2026 The saerad authors. Licensed under the Apache License, Version 2.0.
"""Where SAE-Rad's features look: a traced forward pass, Grad-CAM (or pixel-gradient) maps of features and of
sentences, the side of the patient a map points to, and overlays."""

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from transformers.utils import ModelOutput

LOCALIZATION_METHODS = ("gradcam", "gradient")
Encoder = Callable[[Any], tuple]  # backbone output -> (SAE input, feature activations): the model's one encode path


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Trace:
    """One forward pass that keeps its graph: the activations and what the maps are taken against."""

    embeds: torch.Tensor  # (batch, d_in) SAE input
    acts: torch.Tensor  # (batch, d_sae) feature activations
    source: torch.Tensor  # the spatial features Grad-CAM is taken against
    size: tuple  # (H, W) of the input image
    grid: Callable[[torch.Tensor], torch.Tensor] = _identity  # a `source`-shaped tensor as (batch, C, h, w)
    pixels: Optional[torch.Tensor] = None  # the input, when the graph starts at the pixels
    head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # source -> acts, when it starts at `source`


def _feature_map(outputs, vision_config) -> tuple:
    """The spatial features Grad-CAM is taken against, as the backbone computed them, and a function laying a tensor
    of that shape out as `(batch, channels, h, w)`: the input to the backbone's last stage or block (a CNN's third
    stage, twice the last stage's resolution; the patch tokens a ViT's last block reads, which the CLS output reads),
    else its last feature map."""
    states = getattr(outputs, "hidden_states", None)
    hidden = states[-2] if states is not None and len(states) >= 2 else outputs.last_hidden_state
    if hidden.dim() == 4:
        return hidden, _identity
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


_SIDE = re.compile(r"\b(left|right)\b", re.I)
_BOTH_SIDES = re.compile(r"\b(bilateral(ly)?|both|bibasilar|bibasal|biapical)\b", re.I)
_SIDE_WORD = re.compile(r"\b(?:left|right)(?:[- ]sided)?\b\s*", re.I)


def stated_side(text: str) -> Optional[str]:
    """The side a sentence's words name: "left", "right", "bilateral" (both named, or a word for both), or None."""
    named = {m.group(1).lower() for m in _SIDE.finditer(text)}
    if _BOTH_SIDES.search(text) or len(named) == 2:
        return "bilateral"
    return named.pop() if named else None


def drop_side(text: str) -> str:
    """A sentence without its side words ("Right sided pleural effusion." -> "Pleural effusion.")."""
    out = " ".join(_SIDE_WORD.sub("", text).split())
    return out[:1].upper() + out[1:]


def check_side(sentence: dict) -> None:
    """Grounding as a check: a sentence naming one side whose own map reads the other side loses its side words;
    the words it had stay in `stated_text`, and `side_check` says what was done ("dropped")."""
    said, seen = stated_side(sentence["text"]), sentence.get("side")
    if said in ("left", "right") and seen in ("left", "right") and said != seen:
        sentence["stated_text"], sentence["text"] = sentence["text"], drop_side(sentence["text"])
        sentence["side_check"] = "dropped"


def rejoin(composed: dict) -> None:
    """A composed report's FINDINGS, IMPRESSION and report text again from its sentences (after `check_side`)."""
    for key, section in (("findings", "findings"), ("impression", "impression")):
        composed[key] = " ".join(s["text"] for s in composed["sentences"] if s["report_section"] == section)
    findings, impression = composed["findings"], composed["impression"]
    composed["report"] = f"FINDINGS: {findings}\n\nIMPRESSION: {impression}" if findings else ""


def overlay_map(image: Any, saliency: Any, opacity: float = 0.6) -> Any:
    """A PIL image in gray with a map in [0, 1] in red at `opacity`; the image is resized to the map's `(H, W)`."""
    import numpy as np
    from PIL import Image

    saliency = np.asarray(saliency, dtype=np.float32)
    gray = np.asarray(image.convert("L").resize(saliency.shape[::-1]), dtype=np.float32) / 255
    heat = np.clip(saliency, 0, 1) * float(opacity)
    rgb = np.stack([gray * (1 - heat) + heat, gray * (1 - heat), gray * (1 - heat)], -1)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


def trace(vision_model: nn.Module, encode: Encoder, pixel_values: torch.Tensor, vision_config: Any,
          shortcut: bool = True) -> Trace:
    """Run the backbone and `encode` keeping the graph. For a staged CNN with a pooler (ResNet) the graph starts at
    the last stage's input, so the earlier stages run without one (`shortcut`); otherwise it is built from the pixels
    (the backbone is frozen)."""
    pooler = getattr(vision_model, "pooler", None)
    stages = getattr(getattr(vision_model, "encoder", None), "stages", None)
    if shortcut and isinstance(pooler, nn.Module) and isinstance(stages, nn.ModuleList) and len(stages) > 1:
        with torch.no_grad():
            outputs = vision_model(pixel_values=pixel_values, output_hidden_states=True)
            embeds, acts = encode(outputs)

        def head(source: torch.Tensor) -> torch.Tensor:
            fmap = stages[-1](source)
            return encode(ModelOutput(last_hidden_state=fmap, pooler_output=pooler(fmap)))[1]

        # the maps run `head` once on the features stacked into the batch: one plain backward for all of them
        return Trace(embeds, acts, outputs.hidden_states[-2].detach().float(), tuple(pixel_values.shape[-2:]),
                     head=head)
    pixels = pixel_values.detach().clone().float().requires_grad_(True)
    with torch.enable_grad():
        try:
            outputs = vision_model(pixel_values=pixels, output_hidden_states=True)
        except TypeError:  # a backbone without hidden states: its last feature map
            outputs = vision_model(pixel_values=pixels)
        source, grid = _feature_map(outputs, vision_config)
        embeds, acts = encode(outputs)
    return Trace(embeds, acts, source, tuple(pixel_values.shape[-2:]), grid=grid, pixels=pixels)


def active_features(traced: Trace) -> list:
    """The ids of the features active in any image of the trace."""
    return sorted(int(f) for f in (traced.acts > 0).any(0).nonzero().flatten())


def feature_maps(traced: Trace, feature_ids: list, d_sae: int, method: str = "gradcam") -> torch.Tensor:
    """`(batch, len(feature_ids), H, W)` maps, each in [0, 1]: where each feature looks in each image (an all-zero
    map where it is silent)."""
    if method not in LOCALIZATION_METHODS:
        raise ValueError(f"method must be one of {LOCALIZATION_METHODS}; got {method!r}")
    feature_ids = [int(f) for f in feature_ids]
    for fid in feature_ids:
        if not 0 <= fid < d_sae:
            raise ValueError(f"feature id {fid} is not in [0, d_sae={d_sae})")
    acts = traced.acts.detach()
    directions = torch.zeros(len(feature_ids), *acts.shape, dtype=acts.dtype)
    for k, fid in enumerate(feature_ids):
        directions[k, :, fid] = (acts[:, fid] > 0).to(acts.dtype)  # a silent feature's map is empty anyway
    return directional_maps(traced, directions, method)


def attach_sentence_maps(traced: Trace, composed: list, activations: torch.Tensor) -> None:
    """Each sentence's map: Grad-CAM of the sum of its features' activations, each weighted by its activation
    (one backward per distinct feature set of an image, not per feature: an IMPRESSION sentence that repeats a
    FINDINGS one shares its map), and the side read from it; a sentence whose side words contradict its map's side
    loses them (`check_side`)."""
    slot_of = [{} for _ in composed]  # per image: feature set -> slot
    for i, c in enumerate(composed):
        for sentence in c["sentences"]:
            slot_of[i].setdefault(tuple(sorted(sentence["feature_ids"])), len(slot_of[i]))
    slots = max((len(s) for s in slot_of), default=0)
    if slots == 0:
        return
    acts = activations.detach()
    traced_acts = traced.acts.detach()
    directions = torch.zeros(slots, *acts.shape, dtype=acts.dtype)
    for i, sets in enumerate(slot_of):
        for ids, j in sets.items():
            for f in ids:
                if traced_acts[i, f] > 0:  # a feature switched on by an override has no gradient
                    directions[j, i, f] = acts[i, f]
    maps = directional_maps(traced, directions)
    for i, c in enumerate(composed):
        for sentence in c["sentences"]:
            m = maps[i, slot_of[i][tuple(sorted(sentence["feature_ids"]))]]
            sentence["localization"], sentence["side"] = m, map_side(m)
            check_side(sentence)
        rejoin(c)


def directional_maps(traced: Trace, directions: torch.Tensor, method: str = "gradcam") -> torch.Tensor:
    """`(batch, k, H, W)` maps, each in [0, 1], of the scores `directions[k, i] . acts[i]` (see
    `_directional_grads`); a direction that is zero on an image gives an empty map there."""
    height, width = traced.size
    k, batch = directions.shape[:2]
    if k == 0:
        return torch.zeros(batch, 0, height, width)
    if method == "gradient" and traced.pixels is None:
        raise ValueError("pixel gradients need the graph from the pixels: trace with shortcut=False")
    target = traced.pixels if method == "gradient" else traced.source
    grads = _directional_grads(traced, directions, target)  # (k, batch, ...)
    if method == "gradient":
        m = grads.abs().sum(2).reshape(k * batch, 1, height, width)
        m = nn.functional.avg_pool2d(m, 5, stride=1, padding=2)
    else:
        fmap = traced.grid(traced.source.detach())
        grads = traced.grid(grads.flatten(0, 1)).unflatten(0, (k, batch))
        cam = torch.relu((grads.mean((3, 4), keepdim=True) * fmap[None]).sum(2))  # (k, batch, h, w)
        m = nn.functional.interpolate(cam.flatten(0, 1)[:, None], size=(height, width), mode="bilinear",
                                      align_corners=False)
    maps = m.reshape(k, batch, height, width).transpose(0, 1).detach().float()
    maps[~(directions != 0).any(-1).T] = 0
    peak = maps.flatten(2).max(-1).values.clamp_min(1e-12)
    return maps / peak[:, :, None, None]


def _directional_grads(traced: Trace, directions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """For each direction k and image i, d (directions[k, i] . acts[i]) / d target[i]: a feature's gradient when the
    direction is one-hot, a sentence's when it holds the activations of the sentence's features. Images are
    independent, so every direction comes from one backward: the (direction, image) pairs that are not all-zero
    stacked into one batch through the traced head, else a batched backward (vmap over the directions) of the
    traced graph, else one backward per direction where an operation cannot be batched."""
    k, batch = directions.shape[:2]
    grads = torch.zeros(k, batch, *target.shape[1:], dtype=target.dtype)
    if traced.head is not None and target is traced.source:
        pairs = (directions != 0).any(-1).nonzero()  # (n, 2): direction index, image index
        if len(pairs) == 0:
            return grads
        with torch.enable_grad():
            stacked = target.detach()[pairs[:, 1]].requires_grad_(True)
            score = (traced.head(stacked) * directions[pairs[:, 0], pairs[:, 1]].to(target.dtype)).sum()
            (found,) = torch.autograd.grad(score, stacked)
        grads[pairs[:, 0], pairs[:, 1]] = found
        return grads
    acts = traced.acts
    directions = directions.to(acts.dtype)
    with torch.enable_grad():
        try:
            (grads,) = torch.autograd.grad(acts, target, grad_outputs=directions, is_grads_batched=True,
                                           retain_graph=True)
            return grads
        except RuntimeError:
            return torch.stack([torch.autograd.grad(acts, target, grad_outputs=d, retain_graph=True)[0]
                                for d in directions])


__all__ = [
    "LOCALIZATION_METHODS",
    "Trace",
    "active_features",
    "attach_sentence_maps",
    "directional_maps",
    "feature_maps",
    "map_side",
    "overlay_map",
    "trace",
]
