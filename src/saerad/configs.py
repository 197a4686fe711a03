"""The training configs, the one place their defaults live: the trainers read them, the CLI's options are made
from their fields (docstrings become `--help`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .errors import UserError

DEFAULT_COEF = {"gated": 8.0, "relu": 8.0, "jumprelu": 1.0, "topk": 0.0}
OBJECTIVES = {
    "thumbnail": "masked image modelling (60% patches, normalised pixels) + CLS -> 16x16 thumbnail",
    "vicreg": "masked image modelling (60% patches, normalised pixels) + VICReg on the CLS tokens of two strongly "
              "augmented views (affine, exposure, blur, noise)",
    "labels": "image embedding -> what the labeler reads in the paired report's FINDINGS (per observation: absent or "
              "negated, uncertain, positive; and left, right or bilateral where stated)",
    "contrastive": "image embedding <-> the paired report's FINDINGS, InfoNCE with a jointly trained bag-of-words text "
                   "encoder",
}
REPORT_SUPERVISED = ("labels", "contrastive")


@dataclass
class TrainConfig:
    """How to train one SAE."""

    architecture: Literal["gated", "topk", "jumprelu", "relu"] = "gated"
    """SAE architecture; `gated` is the paper's hybrid."""
    expansion_factor: int = 64
    """d_sae = d_in * expansion_factor (unless d_sae is given)."""
    d_sae: Optional[int] = None
    """Number of features."""
    k: Optional[int] = None
    """Active features per input for topk (default: target_l0, else 32)."""
    target_l0: Optional[float] = None
    """Steer the sparsity coefficient until the mean L0 settles here (the paper: ~15)."""
    sparsity_coef: Optional[float] = None
    """Initial sparsity coefficient (per-architecture default)."""
    epochs: int = 20
    """Passes over the embeddings."""
    batch_size: int = 256
    """Global batch size (split across processes)."""
    lr: float = 1e-3
    """Peak Adam learning rate."""
    seed: int = 0
    """Seeds initialisation and data order."""
    max_steps: Optional[int] = None
    """Stop after this many steps (the schedule still spans all epochs)."""
    warmup_frac: float = 0.05
    """Fraction of steps of linear learning-rate and sparsity-coefficient warm-up."""
    decay_frac: float = 0.2
    """Final fraction of steps over which the learning rate decays linearly to zero."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    checkpoint_every: int = 0
    """Write a checkpoint every N steps (0: only at the end)."""
    log_every: int = 50
    """Log metrics every N steps."""
    dead_window: Optional[int] = None
    """A feature is dead when it did not fire on the last this-many samples (default: one epoch, at most 10^6)."""
    decoder_bias: Literal["median", "mean"] = "median"
    """Where b_dec sits: "median" starts it at the embeddings' geometric median and trains it; "mean" fixes it at their
    mean, so that the most common image (a normal study) is a direction of its own rather than the origin, and gets
    features (demo: empty test reports 138 -> 24 of 340; docs/demo-backbone.md)."""
    l0_gain: float = 0.003
    """Step size of the multiplicative sparsity-coefficient controller used with target_l0."""
    gate_lr_scale: float = 1.0
    """Learning-rate multiple of the gated SAE's b_gate (100: the gates close faster)."""
    magnitude_lr_scale: float = 200.0
    """Learning-rate multiple of the gated SAE's magnitude path, r_mag and b_mag: at 1x they lag the activations' scale
    (4 of 256 atoms in R^64, target L0 8: FVU 0.15 at 1x, 0.095 at 100-300x, 0.103 at 500x, 0.18 at 1000x)."""

    def __post_init__(self):
        if self.architecture not in DEFAULT_COEF:
            raise UserError(f"architecture must be one of {sorted(DEFAULT_COEF)}; got {self.architecture!r}")
        for name in ("expansion_factor", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"lr must be positive; got {self.lr}")
        if self.decoder_bias not in ("median", "mean"):
            raise UserError(f"decoder_bias must be 'median' or 'mean'; got {self.decoder_bias!r}")
        for name in ("gate_lr_scale", "magnitude_lr_scale"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive; got {getattr(self, name)}")
        if self.k is not None and self.k < 1:
            raise UserError(f"k must be >= 1; got {self.k}")
        if self.target_l0 is not None and not self.target_l0 > 0:
            raise UserError(f"target_l0 must be positive; got {self.target_l0}")


@dataclass
class PretrainConfig:
    """Backbone shape and optimisation."""

    architecture: Literal["dinov2", "resnet"] = "dinov2"
    """Backbone: `dinov2` (a ViT, as RAD-DINO) or `resnet` (a small ResNet of widths hidden_size/8 ... hidden_size,
    two basic blocks a stage; report-supervised objectives without the masked patch term only)."""
    image_size: int = 128
    """Input size (square)."""
    patch_size: int = 16
    """ViT patch size."""
    hidden_size: int = 192
    """Token width."""
    num_layers: int = 6
    """Transformer layers."""
    num_heads: int = 3
    """Attention heads."""
    mask_ratio: float = 0.6
    """Fraction of patches masked."""
    thumbnail: int = 16
    """Side of the thumbnail the CLS token predicts (objective thumbnail)."""
    objective: Literal["thumbnail", "vicreg", "labels", "contrastive"] = "thumbnail"
    """What trains the CLS token: `thumbnail` (predict a 16x16 thumbnail), `vicreg` (two strongly augmented views
    agree, VICReg), `labels` (predict the paired report's labeler output) or `contrastive` (match the paired report's
    FINDINGS text)."""
    mim_weight: float = 1.0
    """Weight of the masked patch term beside a report-supervised objective (0: none, and no masked forward pass);
    the self-supervised objectives always use it."""
    temperature: float = 0.07
    """InfoNCE temperature (objective contrastive)."""
    eval_every: int = 0
    """Every N steps, the objective's loss on the validation split (report-supervised objectives); the weights at
    the lowest one are exported (early stopping). 0: no evaluation, the last weights."""
    eval_size: int = 512
    """Validation images used for that loss (the first N of the split)."""
    projector: int = 512
    """Width of the VICReg projector; 0: the loss acts on the CLS token itself."""
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (cosine decay after 5% warm-up)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    lora_rank: int = 8
    """LoRA rank with --lora."""
    num_workers: int = 2
    """DataLoader workers rendering or decoding images."""
    seed: int = 0
    """Seeds initialisation, masks and fresh phantom patients."""
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = None
    """Accelerate's mixed precision: `no`, `bf16` or `fp16` (fp16 needs a CUDA GPU); None: what `accelerate launch`
    or the Accelerate config says, else `no`."""
    checkpoint_every: int = 0
    """Write `OUT/checkpoint` every N steps (0: only when `max_steps` stops the run early)."""
    max_steps: Optional[int] = None
    """Stop after this many steps with a checkpoint, to continue later with `resume`."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {sorted(OBJECTIVES)}; got {self.objective!r}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise UserError(f"mixed_precision must be no, bf16 or fp16; got {self.mixed_precision!r}")
        if self.objective in ("vicreg", "contrastive") and self.batch_size < 2:
            raise UserError(f"--objective {self.objective} needs --batch-size of at least 2 (it contrasts the batch's "
                            "images)")
        if self.eval_every and self.objective not in REPORT_SUPERVISED:
            raise UserError("--eval-every needs a report-supervised --objective (labels or contrastive): the "
                            "self-supervised losses are not comparable across steps")
        if self.mim_weight < 0:
            raise UserError(f"mim_weight must be >= 0; got {self.mim_weight}")
        if self.architecture not in ("dinov2", "resnet"):
            raise UserError(f"architecture must be dinov2 or resnet; got {self.architecture!r}")
        if self.architecture == "resnet" and (self.objective not in REPORT_SUPERVISED or self.mim_weight):
            raise UserError("--architecture resnet has no patch tokens to mask: use a report-supervised --objective "
                            "(labels or contrastive) with --mim-weight 0")
