"""Self-supervised backbone for the offline demo: a small DINOv2 trained by masked image modelling, no labels.

Objective (SimMIM-style, with a global target for the CLS token): 60% of the patches are replaced by the mask
token; a linear head predicts each masked patch's pixels (normalised per patch) from its output token, and a
linear head on the CLS token predicts a 16x16 thumbnail of the whole (unmasked) image. Both are mean squared
errors. `--objective vicreg` replaces the thumbnail with VICReg between the CLS tokens of two strongly augmented views
of each image, the masked patches predicted in both. `--init ID --lora` adapts an existing backbone with a PEFT LoRA
adapter on the same objective and merges it. Training runs through Accelerate (a GPU when there is one) and resumes
from `OUT/checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

OBJECTIVES = {
    "thumbnail": "masked image modelling (60% patches, normalised pixels) + CLS -> 16x16 thumbnail",
    "vicreg": "masked image modelling (60% patches, normalised pixels) + VICReg on the CLS tokens of two strongly "
              "augmented views (affine, exposure, blur, noise)",
}


@dataclass
class PretrainConfig:
    """Backbone shape and optimisation."""

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
    objective: str = "thumbnail"
    """What trains the CLS token: `thumbnail` (predict a 16x16 thumbnail) or `vicreg` (two strongly augmented
    views agree, VICReg)."""
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
    mixed_precision: Optional[str] = None
    """Accelerate's mixed precision: `no`, `bf16` or `fp16` (fp16 needs a CUDA GPU); None: what `accelerate launch`
    or the Accelerate config says, else `no`."""
    checkpoint_every: int = 0
    """Write `OUT/checkpoint` every N steps (0: only when `max_steps` stops the run early)."""
    max_steps: Optional[int] = None
    """Stop after this many steps with a checkpoint, to continue later with `resume`."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}; got {self.objective!r}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16; got {self.mixed_precision!r}")
        if self.objective == "vicreg" and self.batch_size < 2:
            raise ValueError("--objective vicreg needs --batch-size of at least 2 (it spreads the batch's variance)")


class PhantomStream(torch.utils.data.IterableDataset):
    """Endless phantoms with findings drawn from IU-phantom train rows and fresh patient seeds (never the
    benchmark's own images)."""

    def __init__(self, findings_pool: list, size: int, seed: Union[int, str]):
        self.pool, self.size, self.seed = findings_pool, size, seed

    def __iter__(self):
        from .data.phantom import render

        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        rng = random.Random(f"{self.seed}:{worker}")
        i = 0
        while True:
            findings = rng.choice(self.pool)
            seed = int(hashlib.sha256(f"pretrain:{self.seed}:{worker}:{i}".encode()).hexdigest()[:8], 16)
            i += 1
            yield render(findings, seed=seed, size=self.size)


class ImageStream(torch.utils.data.IterableDataset):
    """Endless shuffled passes over the images of a dataset split."""

    def __init__(self, rows, seed: Union[int, str]):
        self.rows, self.seed = rows, seed

    def __iter__(self):
        from .data.images import to_grayscale

        rng = random.Random(self.seed)
        order = list(range(len(self.rows)))
        while True:
            rng.shuffle(order)
            for i in order:
                yield to_grayscale(self.rows[i]["image"])


def _augment(image, rng: random.Random):
    """Mild crop and exposure changes; never a flip (laterality is a finding)."""
    from PIL import ImageEnhance

    w, h = image.size
    scale = rng.uniform(0.85, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((x0, y0, x0 + cw, y0 + ch))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))


def _strong_augment(image, rng: random.Random):
    """Views for the invariance objective: a random affine (anisotropic scale, shift, small rotation), exposure
    (gain, gamma, brightness), blur and noise; never a flip (laterality is a finding)."""
    import numpy as np
    from PIL import Image, ImageFilter

    w, h = image.size
    sx, sy = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)
    angle = math.radians(rng.uniform(-5, 5))
    tx, ty = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h
    cos, sin = math.cos(angle), math.sin(angle)
    # inverse map (output -> input) about the centre
    a, b, d, e = cos / sx, sin / sx, -sin / sy, cos / sy
    cx, cy = w / 2, h / 2
    c = cx - a * (cx + tx) - b * (cy + ty)
    f = cy - d * (cx + tx) - e * (cy + ty)
    image = image.transform((w, h), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = np.clip(x, 0, 1) ** rng.uniform(0.75, 1.33) * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)
    x = x + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(0, 0.03), x.shape)
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), mode="L")


def _vicreg(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """VICReg (Bardes et al. 2022) with its 25/25/1 weights divided by 25; the covariance term is averaged over the
    two views where the paper sums it."""
    invariance = F.mse_loss(z1, z2)
    variance = covariance = 0.0
    for z in (z1, z2):
        z = z - z.mean(0)
        std = (z.var(0) + 1e-4).sqrt()
        variance = variance + F.relu(1 - std).mean() / 2
        cov = (z.T @ z) / (len(z) - 1)
        off = cov - torch.diag(torch.diag(cov))
        covariance = covariance + off.pow(2).sum() / z.shape[1] / 2
    return invariance + variance + covariance / 25


class MaskedImageModel(nn.Module):
    """Backbone plus the objective's heads (dropped at export)."""

    def __init__(self, backbone, config: PretrainConfig):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.patch = backbone.config.patch_size
        self.pixel_head = nn.Linear(hidden, self.patch * self.patch)
        self.thumbnail, self.mask_ratio, self.objective = config.thumbnail, config.mask_ratio, config.objective
        if config.objective == "vicreg":
            width = config.projector
            self.projector = nn.Identity() if not width else nn.Sequential(
                nn.Linear(hidden, width), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width))
        else:
            self.thumb_head = nn.Linear(hidden, config.thumbnail * config.thumbnail)

    def forward(self, pixels: torch.Tensor, generator: torch.Generator) -> dict:
        if self.objective == "vicreg":  # the collate put the first views of the images first, then the second
            half = len(pixels) // 2
            mim_1, cls_1 = self._masked(pixels[:half], generator)
            mim_2, cls_2 = self._masked(pixels[half:], generator)
            mim, agree = (mim_1 + mim_2) / 2, _vicreg(self.projector(cls_1), self.projector(cls_2))
            return {"loss": mim + agree, "mim": mim, "vicreg": agree}
        mim, cls = self._masked(pixels, generator)
        thumb = F.adaptive_avg_pool2d(pixels[:, :1], self.thumbnail).flatten(1)
        thumb = (thumb - thumb.mean(-1, keepdim=True)) / (thumb.std(-1, keepdim=True) + 1e-6)
        glob = (self.thumb_head(cls) - thumb).pow(2).mean()
        return {"loss": mim + glob, "mim": mim, "global": glob}

    def _masked(self, pixels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked patch prediction loss and the CLS token of the masked view."""
        b = pixels.shape[0]
        gray = pixels[:, :1]  # the processor replicated grayscale to 3 channels
        patches = F.unfold(gray, self.patch, stride=self.patch).transpose(1, 2)  # (b, n, p*p)
        n = patches.shape[1]
        n_mask = int(round(self.mask_ratio * n))
        scores = torch.rand(b, n, generator=generator)
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask.scatter_(1, scores.argsort(dim=1)[:, :n_mask], True)
        hidden = self.backbone(pixel_values=pixels, bool_masked_pos=mask.to(pixels.device)).last_hidden_state
        target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
        pred = self.pixel_head(hidden[:, 1 : n + 1])
        return (pred - target).pow(2).mean(-1)[mask.to(pred.device)].mean(), hidden[:, 0]


def _backbone(config: PretrainConfig, init: Optional[str]):
    from transformers import AutoImageProcessor, AutoModel, Dinov2Config, Dinov2Model

    from modeling_saerad import default_image_processor

    if init:
        try:
            model = AutoModel.from_pretrained(init, use_safetensors=True)
            processor = AutoImageProcessor.from_pretrained(init)
        except OSError as err:
            raise ValueError(f"{init}: cannot load the backbone ({str(err).splitlines()[0]})") from None
        return model, processor
    vision = Dinov2Config(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                          num_attention_heads=config.num_heads, intermediate_size=4 * config.hidden_size,
                          patch_size=config.patch_size, image_size=config.image_size, layerscale_value=1.0)
    torch.manual_seed(config.seed)
    return Dinov2Model(vision), default_image_processor(vision)


def stream_id(seed: int, start: int = 0, process: int = 0) -> Union[int, str]:
    """What seeds the image stream and the augmentations: the seed alone for a fresh single-process run, else also
    the process and the step a resumed run starts at, so neither repeats images another has seen."""
    return seed if (start, process) == (0, 0) else f"{seed}@{process}:{start}"


def _load_checkpoint(folder: Path, model: nn.Module, optimizer, generator: torch.Generator, meta: dict) -> dict:
    """Restore weights, AdamW moments and the mask generator from `folder`; return its state.json."""
    from safetensors.torch import load_file

    from .sae.trainer import check_settings, load_training_state

    saved = json.loads((folder / "state.json").read_text())
    run = ("dataset", "init", "lora")
    # a setting added after the checkpoint was written takes its default
    check_settings(folder, {**asdict(PretrainConfig()), **saved["config"], **{k: saved.get(k) for k in run}},
                   {**meta["config"], **{k: meta[k] for k in run}},
                   free=("checkpoint_every", "max_steps", "num_workers", "mixed_precision"))
    tensors = load_file(str(folder / "state.safetensors"))
    load_training_state(model, optimizer, tensors, saved["adam_steps"])
    generator.set_state(tensors["mask_generator"])
    return saved


def pretrain(dataset: str, out: str, config: PretrainConfig, init: Optional[str] = None, lora: bool = False,
             command: Optional[str] = None, resume: bool = False) -> dict:
    """Train (or LoRA-adapt) a backbone self-supervised on `dataset` and save it with its processor and card;
    with `resume`, continue the run whose checkpoint is in `out/checkpoint`."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .data.adapters import load_split
    from .sae.trainer import TrainingDiverged, training_state, write_checkpoint

    if lora and not init:
        raise ValueError("--lora adapts an existing backbone: pass --init ID_OR_PATH")
    folder = Path(out)
    checkpoint = folder / "checkpoint"
    interrupted = (checkpoint / "state.json").exists()
    if interrupted and not resume:
        raise ValueError(f"{out} already holds a pretraining run; pass --resume to continue it or choose another --out")
    if resume and not interrupted and (folder / "pretrain.json").exists():
        raise ValueError(f"{out} holds a finished backbone, so there is nothing to resume; drop --resume to train "
                         "it again from scratch, or choose another --out")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=config.mixed_precision)
    backbone, processor = _backbone(config, init)
    if lora:
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(backbone, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    torch.manual_seed(config.seed + 1)
    model = MaskedImageModel(backbone, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    meta = {"format_version": 1, "dataset": dataset, "init": init, "lora": lora, "config": asdict(config)}
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    start, history, resumed_at = 0, [], []
    if resume and interrupted:
        saved = _load_checkpoint(checkpoint, inner, optimizer, generator, meta)
        start, history = saved["step"], saved["history_tail"]
        resumed_at = [*saved.get("resumed_at", []), start]

    train = load_split(dataset, "train")
    stream = stream_id(config.seed, start, accelerator.process_index)
    if dataset.startswith("iu-phantom"):
        images = PhantomStream([r["phantom_findings"] for r in train.select_columns(["phantom_findings"])],
                               config.image_size + config.image_size // 8, stream)
    else:
        images = ImageStream(train, stream)
    rng = random.Random(stream)

    def collate(batch):
        if config.objective == "vicreg":
            views = [_strong_augment(im, rng) for _ in range(2) for im in batch]
            return processor(images=views, return_tensors="pt")["pixel_values"]
        return processor(images=[_augment(im, rng) for im in batch], return_tensors="pt")["pixel_values"]

    loader = torch.utils.data.DataLoader(images, batch_size=config.batch_size, num_workers=config.num_workers,
                                         collate_fn=collate)
    warm = max(1, config.steps // 20)
    last = min(config.steps, config.max_steps or config.steps)

    def save(step: int) -> None:
        if accelerator.is_main_process:
            tensors, adam_steps = training_state(inner, optimizer)
            tensors["mask_generator"] = generator.get_state()
            write_checkpoint(checkpoint, tensors, {**meta, "step": step, "adam_steps": adam_steps,
                                                   "resumed_at": resumed_at, "history_tail": history[-50:]})

    bar = tqdm(total=config.steps, initial=start, desc="pretraining (masked image modelling)", unit="step",
               disable=not accelerator.is_local_main_process)
    for step, pixels in zip(range(start, last), loader):
        lr = config.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            losses = model(pixels.to(accelerator.device), generator)
        if not torch.isfinite(losses["loss"]):
            raise TrainingDiverged(f"pretraining diverged at step {step}: the loss is {losses['loss'].item()}; "
                                   f"lower --lr (the last checkpoint, if any, in {checkpoint} is intact)")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < last:
            save(step + 1)  # the last step saves below (stopped early) or exports (complete)
    bar.close()
    if last < config.steps:
        save(last)
        return {"stopped_at": last, "steps": config.steps, "checkpoint": str(checkpoint)}
    backbone = inner.backbone
    if lora:
        backbone = backbone.merge_and_unload()
    tail = history[-min(50, len(history)):]
    summary = {
        "objective": OBJECTIVES[config.objective],
        "dataset": dataset, "init": init, "lora": lora, "config": asdict(config),
        "final_loss": {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]} if tail else None,
        "command": command, "resumed_at": resumed_at,
    }
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        backbone.save_pretrained(folder)
        processor.save_pretrained(folder)
        (folder / "pretrain.json").write_text(json.dumps(summary, indent=1))
        (folder / "README.md").write_text(_card(summary))
        shutil.rmtree(checkpoint, ignore_errors=True)  # the run is complete: the folder is a plain backbone again
    accelerator.wait_for_everyone()
    return summary


def _card(summary: dict) -> str:
    c = summary["config"]
    resumed = ""
    if summary.get("resumed_at"):
        steps = ", ".join(map(str, summary["resumed_at"]))
        resumed = (f"- Resumed at step {steps}: after a resumption the images come from a stream re-seeded at that "
                   "step, so an uninterrupted run of the command gives other weights.\n")
    return f"""---
library_name: transformers
tags: [dinov2, chest-x-ray, phantom, self-supervised]
license: apache-2.0
---
# phantom-dino: a small self-supervised DINOv2 for saerad's offline demo

This backbone **knows only phantom radiographs**: procedurally drawn chest X-rays from `saerad.data.phantom`. It has
never seen a real radiograph and must not be used on one. It exists so that the SAE-Rad pipeline can run end to end
on a machine with no hub access, where RAD-DINO cannot be downloaded.

- Architecture: `Dinov2Model`, hidden {c['hidden_size']}, {c['num_layers']} layers, {c['num_heads']} heads,
  patch {c['patch_size']}, {c['image_size']} px.
- Objective: {summary['objective']}; no labels.
- Data: phantoms rendered with fresh patient seeds, findings drawn from the IU-phantom train split (never its
  validation or test images); {c['steps']} steps of {c['batch_size']} images.
- Final losses: {summary['final_loss']}.
{resumed}
Reproduce: `{summary['command'] or 'saerad pretrain --dataset iu-phantom --out DIR'}`
"""
