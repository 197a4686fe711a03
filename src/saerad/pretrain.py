"""Backbone pretraining for the offline demo: a small DINOv2 trained on images alone, or on images and their reports.

Self-supervised objectives (SimMIM-style, with a global target for the CLS token): 60% of the patches are replaced by
the mask token; a linear head predicts each masked patch's pixels (normalised per patch) from its output token, and a
linear head on the CLS token predicts a 16x16 thumbnail of the whole (unmasked) image. Both are mean squared errors.
`--objective vicreg` replaces the thumbnail with VICReg between the CLS tokens of two strongly augmented views of each
image, the masked patches predicted in both.

Report-supervised objectives, as most chest X-ray encoders are made (CheXpert classifiers, ConVIRT/CheXzero), read
only the train split's (image, report) pairs: `labels` predicts from the CLS token what the labeler reads in the
paired report's FINDINGS (each observation's status, and its side where the report states one); `contrastive`
matches the CLS token to an embedding of the FINDINGS text made by a small bag-of-words encoder trained jointly
(InfoNCE both ways). Either adds the masked patch term when `mim_weight` > 0. The validation split gives the early
stopping loss; the test split is never read.

`--init ID --lora` adapts an existing backbone with a PEFT LoRA adapter on the same objective and merges it. Training
runs through Accelerate (a GPU when there is one) and resumes from `OUT/checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .configs import OBJECTIVES, REPORT_SUPERVISED, PretrainConfig
from .errors import UserError
from .outputs import atomic_write, recover_folder

PRETRAIN_SPLITS = ("train", "validation")  # the test split is for evaluation only


class PhantomStream(torch.utils.data.IterableDataset):
    """Endless `(phantom, row)` pairs: the findings of a random IU-phantom train row drawn on a fresh patient (never
    the benchmark's own images)."""

    def __init__(self, findings_pool: list, size: int, seed: Union[int, str]):
        self.pool, self.size, self.seed = findings_pool, size, seed

    def __iter__(self):
        from .data.adapters import stable_hash
        from .data.phantom import render

        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        rng = random.Random(f"{self.seed}:{worker}")
        i = 0
        while True:
            row = rng.choice(range(len(self.pool)))
            seed = stable_hash(f"pretrain:{self.seed}:{worker}:{i}")
            i += 1
            yield render(self.pool[row], seed=seed, size=self.size), row


class ImageStream(torch.utils.data.IterableDataset):
    """Endless shuffled passes over the `(image, row)` pairs of a dataset split."""

    def __init__(self, rows, seed: Union[int, str]):
        self.rows, self.seed = rows, seed

    def __iter__(self):
        from .data.images import to_grayscale

        rng = random.Random(self.seed)
        order = list(range(len(self.rows)))
        while True:
            rng.shuffle(order)
            for i in order:
                yield to_grayscale(self.rows[i]["image"]), i


STATUSES = ("absent", "uncertain", "positive")  # a negated finding is absent from the image
SIDES = ("left", "right", "bilateral")
IGNORE = -100


def _observed() -> tuple:
    """The observations the labels objective predicts: CheXpert's 14, then the labeler's extra ones."""
    from .labeler import EXTRA_OBSERVATIONS, OBSERVATIONS

    return OBSERVATIONS + EXTRA_OBSERVATIONS


def report_targets(findings: Optional[str]) -> tuple[list[int], list[int]]:
    """What the labeler reads in a FINDINGS text, per observation of `_observed()`: the index of its status in
    STATUSES, and of its side in SIDES where a positive or uncertain mention states one (else IGNORE)."""
    from .labeler import aggregate, label_mentions

    names = _observed()
    status, sides = [0] * len(names), [set() for _ in names]
    mentions = label_mentions(findings or "")
    for m in mentions:
        if m["label"] in names and m["status"] != "negative":
            i = names.index(m["label"])
            status[i] = max(status[i], STATUSES.index(m["status"]))
            if m["laterality"]:
                sides[i].add(m["laterality"])
    if aggregate(mentions).get("No Finding") == "positive":
        status[names.index("No Finding")] = STATUSES.index("positive")
    side = [IGNORE if not s else SIDES.index("bilateral") if len(s) > 1 else SIDES.index(s.pop()) for s in sides]
    return status, side


def report_tokens(findings: Optional[str], buckets: int) -> list[int]:
    """Hashed word unigrams and bigrams of a FINDINGS text: the bag-of-words text encoder's input (stable across
    processes, unlike Python's `hash`)."""
    words = re.findall(r"[a-z]+", (findings or "").lower()) or ["<empty>"]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [zlib.crc32(g.encode()) % buckets for g in grams]


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


TEXT_BUCKETS = 1 << 15  # hashed n-gram vocabulary of the contrastive objective's text encoder
EMBED_WIDTH = 256  # width of the contrastive objective's joint space


class MaskedImageModel(nn.Module):
    """Backbone plus the objective's heads (dropped at export)."""

    def __init__(self, backbone, config: PretrainConfig):
        super().__init__()
        self.backbone = backbone
        from configuration_saerad import backbone_width

        hidden = backbone_width(backbone.config)
        self.patch = getattr(backbone.config, "patch_size", None)
        self.pixel_head = nn.Linear(hidden, self.patch * self.patch) if self.patch else None
        self.thumbnail, self.mask_ratio, self.objective = config.thumbnail, config.mask_ratio, config.objective
        self.mim_weight, self.temperature = config.mim_weight, config.temperature
        if config.objective == "vicreg":
            width = config.projector
            self.projector = nn.Identity() if not width else nn.Sequential(
                nn.Linear(hidden, width), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width))
        elif config.objective == "labels":
            n = len(_observed())
            # linear heads, so that what the report states is linearly readable from the exported CLS token
            self.status_head = nn.Linear(hidden, n * len(STATUSES))
            self.side_head = nn.Linear(hidden, n * len(SIDES))
        elif config.objective == "contrastive":
            self.text_encoder = nn.EmbeddingBag(TEXT_BUCKETS, EMBED_WIDTH, mode="mean")
            self.text_head = nn.Sequential(nn.LayerNorm(EMBED_WIDTH), nn.Linear(EMBED_WIDTH, EMBED_WIDTH))
            self.image_head = nn.Linear(hidden, EMBED_WIDTH)
        else:
            self.thumb_head = nn.Linear(hidden, config.thumbnail * config.thumbnail)

    def forward(self, pixels: torch.Tensor, generator: torch.Generator, targets: Optional[dict] = None) -> dict:
        if self.objective == "vicreg":  # the collate put the first views of the images first, then the second
            half = len(pixels) // 2
            mim_1, cls_1 = self._masked(pixels[:half], generator)
            mim_2, cls_2 = self._masked(pixels[half:], generator)
            mim, agree = (mim_1 + mim_2) / 2, _vicreg(self.projector(cls_1), self.projector(cls_2))
            return {"loss": mim + agree, "mim": mim, "vicreg": agree}
        if self.objective in REPORT_SUPERVISED:
            losses = self.report_loss(self.embed(pixels), targets)
            if self.mim_weight:
                losses["mim"] = self._masked(pixels, generator)[0]
                losses["loss"] = losses["loss"] + self.mim_weight * losses["mim"]
            return losses
        mim, cls = self._masked(pixels, generator)
        thumb = F.adaptive_avg_pool2d(pixels[:, :1], self.thumbnail).flatten(1)
        thumb = (thumb - thumb.mean(-1, keepdim=True)) / (thumb.std(-1, keepdim=True) + 1e-6)
        glob = (self.thumb_head(cls) - thumb).pow(2).mean()
        return {"loss": mim + glob, "mim": mim, "global": glob}

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The unmasked image's CLS token (a ViT) or pooled feature map (a CNN), as `saerad embed` pools it."""
        from modeling_saerad import pool_backbone_output

        return pool_backbone_output(self.backbone(pixel_values=pixels), "cls", self.backbone.config)

    def report_loss(self, cls: torch.Tensor, targets: dict) -> dict:
        """The report-supervised objective's losses on image embeddings (no masked patch term)."""
        return self._labels(cls, targets) if self.objective == "labels" else self._contrastive(cls, targets)

    def _labels(self, cls: torch.Tensor, targets: dict) -> dict:
        """Cross-entropy of each observation's status, summed over observations, and, where the report states one,
        of its side (the mean over stated sides)."""
        # summed, not averaged: averaged over 23 mostly absent observations, one finding learnt moves the loss by
        # about 0.01 and the side term drowns it (measured: 400 steps at the prior)
        status = F.cross_entropy(self.status_head(cls).view(-1, len(STATUSES)), targets["status"].flatten(),
                                 reduction="none").view(len(cls), -1).sum(1).mean()
        side_target = targets["side"].flatten()
        side = (F.cross_entropy(self.side_head(cls).view(-1, len(SIDES)), side_target, ignore_index=IGNORE)
                if (side_target != IGNORE).any() else cls.sum() * 0.0)
        return {"loss": status + side, "status": status, "side": side}

    def _contrastive(self, cls: torch.Tensor, targets: dict) -> dict:
        """Symmetric InfoNCE between images and their reports; identical reports in a batch are not negatives."""
        text = F.normalize(self.text_head(self.text_encoder(targets["tokens"], targets["offsets"])), dim=-1)
        image = F.normalize(self.image_head(cls), dim=-1)
        logits = image @ text.T / self.temperature
        same = targets["report"][:, None] == targets["report"][None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(cls), dtype=torch.bool, device=cls.device), float("-inf"))
        labels = torch.arange(len(cls), device=cls.device)
        nce = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        return {"loss": nce, "infonce": nce}

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
    from transformers import Dinov2Config, Dinov2Model

    from image_processing_saerad import default_image_processor

    if init:
        from .embed import load_backbone

        return load_backbone(init)
    if config.architecture == "resnet":
        from transformers import ResNetConfig, ResNetModel

        # image_size is not a ResNet setting: kept in its config for the processor (and saerad's card)
        vision = ResNetConfig(embedding_size=config.hidden_size // 8, depths=[2, 2, 2, 2], layer_type="basic",
                              hidden_sizes=[config.hidden_size // 8 * 2**i for i in range(4)],
                              image_size=config.image_size)
        torch.manual_seed(config.seed)
        return ResNetModel(vision), default_image_processor(vision)
    vision = Dinov2Config(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                          num_attention_heads=config.num_heads, intermediate_size=4 * config.hidden_size,
                          patch_size=config.patch_size, image_size=config.image_size, layerscale_value=1.0)
    torch.manual_seed(config.seed)
    return Dinov2Model(vision), default_image_processor(vision)


def pretrain_split(dataset: str, split: str):
    """A split that pretraining may read: train (images, and reports for the report-supervised objectives) or
    validation (early stopping); the test split is refused, so no test report or image shapes a backbone."""
    from .data.adapters import load_split

    if split not in PRETRAIN_SPLITS:
        raise UserError(f"pretraining reads only the {' and '.join(PRETRAIN_SPLITS)} splits of {dataset}; got "
                        f"{split!r} (the test split is kept for evaluation)")
    return load_split(dataset, split)


def _targets(rows, objective: str):
    """For a report-supervised objective, a function from row indices of `rows` to the batch's targets (read from
    each row's FINDINGS once, up front); None for the self-supervised objectives."""
    if objective not in REPORT_SUPERVISED:
        return None
    if "findings" not in rows.column_names:
        raise UserError(f"--objective {objective} learns from the paired reports, but the dataset has no 'findings' "
                        f"column (it has {rows.column_names})")
    texts = list(rows["findings"])
    if objective == "labels":
        read = [report_targets(t) for t in texts]
        status = torch.tensor([r[0] for r in read])
        side = torch.tensor([r[1] for r in read])
        return lambda index: {"status": status[index], "side": side[index]}
    tokens = [report_tokens(t, TEXT_BUCKETS) for t in texts]
    folded = [" ".join((t or "").lower().split()) for t in texts]
    text_id = {t: i for i, t in enumerate(dict.fromkeys(folded))}  # identical reports share an id
    report = torch.tensor([text_id[t] for t in folded])

    def contrastive(index: list) -> dict:
        bags = [tokens[i] for i in index]
        offsets = torch.tensor([0] + [len(b) for b in bags[:-1]]).cumsum(0)
        return {"tokens": torch.tensor([t for b in bags for t in b]), "offsets": offsets, "report": report[index]}

    return contrastive


def _to(targets: Optional[dict], device) -> Optional[dict]:
    return None if targets is None else {k: v.to(device) for k, v in targets.items()}


def _validation_loss(dataset: str, config: PretrainConfig, processor, accelerator):
    """The objective's loss (without the masked patch term) on the first `eval_size` validation images, in batches
    of `batch_size`: what early stopping compares."""
    rows = pretrain_split(dataset, "validation")
    rows = rows.select(range(min(config.eval_size, len(rows))))
    targets = _targets(rows, config.objective)
    from .data.images import to_grayscale

    batches = []
    for at in range(0, len(rows), config.batch_size):
        index = list(range(at, min(at + config.batch_size, len(rows))))
        if len(index) < 2 and config.objective == "contrastive":
            continue
        pixels = processor(images=[to_grayscale(rows[i]["image"]) for i in index], return_tensors="pt")
        batches.append((pixels["pixel_values"], targets(index)))

    @torch.no_grad()
    def evaluate(model: MaskedImageModel) -> float:
        model.eval()
        total = 0.0
        for pixels, batch in batches:
            cls = model.embed(pixels.to(accelerator.device))
            total += float(model.report_loss(cls, _to(batch, accelerator.device))["loss"]) * len(pixels)
        model.train()
        return total / sum(len(p) for p, _ in batches)

    return evaluate


def stream_id(seed: int, start: int = 0, process: int = 0) -> Union[int, str]:
    """What seeds the image stream and the augmentations: the seed alone for a fresh single-process run, else also
    the process and the step a resumed run starts at, so neither repeats images another has seen."""
    return seed if (start, process) == (0, 0) else f"{seed}@{process}:{start}"


def _load_checkpoint(folder: Path, model: nn.Module, optimizer, generator: torch.Generator, meta: dict) -> dict:
    """Restore weights, AdamW moments and the mask generator from `folder`; return its state.json."""
    from .checkpoints import check_settings, load_training_state, read_checkpoint

    saved, tensors = read_checkpoint(folder)
    run = ("dataset", "init", "lora")
    # a setting added after the checkpoint was written takes its default
    check_settings(folder, {**asdict(PretrainConfig()), **saved["config"], **{k: saved.get(k) for k in run}},
                   {**meta["config"], **{k: meta[k] for k in run}},
                   free=("checkpoint_every", "max_steps", "num_workers", "mixed_precision"))
    load_training_state(model, optimizer, tensors, saved["adam_steps"])
    generator.set_state(tensors["mask_generator"])
    return {**saved, "tensors": tensors}


def pretrain(dataset: str, out: str, config: PretrainConfig, init: Optional[str] = None, lora: bool = False,
             command: Optional[str] = None, resume: bool = False) -> dict:
    """Train (or LoRA-adapt) a backbone self-supervised on `dataset` and save it with its processor and card;
    with `resume`, continue the run whose checkpoint is in `out/checkpoint`."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .checkpoints import training_state, write_checkpoint
    from .sae.trainer import TrainingDiverged

    folder = Path(out)
    checkpoint = folder / "checkpoint"
    interrupted = _check_run(folder, config, init, lora, resume)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=config.mixed_precision)
    model, processor = _model(config, init, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    meta = {"format_version": 1, "dataset": dataset, "init": init, "lora": lora, "config": asdict(config)}
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    start, history, resumed_at, validation = 0, [], [], []
    best = {"loss": None, "step": None, "weights": None}  # early stopping: the lowest validation loss so far
    if resume and interrupted:
        start, history, resumed_at, validation, best = _restore(checkpoint, inner, optimizer, generator, meta)

    loader = _train_loader(dataset, config, processor, stream_id(config.seed, start, accelerator.process_index))
    evaluate = _validation_loss(dataset, config, processor, accelerator) if config.eval_every else None
    warm = max(1, config.steps // 20)
    last = min(config.steps, config.max_steps or config.steps)

    def save(step: int) -> None:
        if accelerator.is_main_process:
            tensors, adam_steps = training_state(inner, optimizer)
            tensors["mask_generator"] = generator.get_state()
            tensors.update({f"best.{k}": v for k, v in (best["weights"] or {}).items()})
            write_checkpoint(checkpoint, tensors, {**meta, "step": step, "adam_steps": adam_steps,
                                                   "resumed_at": resumed_at, "history_tail": history[-50:],
                                                   "validation": validation, "best_step": best["step"]})

    bar = tqdm(total=config.steps, initial=start, desc=f"pretraining ({config.objective})", unit="step",
               disable=not accelerator.is_local_main_process)
    for step, (pixels, batch_targets) in zip(range(start, last), loader):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        with accelerator.autocast():
            losses = model(pixels.to(accelerator.device), generator, _to(batch_targets, accelerator.device))
        if not torch.isfinite(losses["loss"]):
            raise TrainingDiverged(f"pretraining diverged at step {step}: the loss is {losses['loss'].item()}; "
                                   f"lower --lr (the last checkpoint, if any, in {checkpoint} is intact)")
        _optimise(losses["loss"], params, optimizer, accelerator)
        history.append({k: float(v.detach()) for k, v in losses.items()})
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        if evaluate and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            validation.append({"step": step + 1, "loss": evaluate(inner)})
            if best["loss"] is None or validation[-1]["loss"] < best["loss"]:
                best.update(loss=validation[-1]["loss"], step=step + 1,
                            weights={k: v.detach().cpu().clone() for k, v in inner.backbone.state_dict().items()})
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < last:
            save(step + 1)  # the last step saves below (stopped early) or exports (complete)
    bar.close()
    if last < config.steps:
        save(last)
        return {"stopped_at": last, "steps": config.steps, "checkpoint": str(checkpoint)}
    backbone = inner.backbone
    if best["weights"] is not None:
        backbone.load_state_dict(best["weights"])
    if lora:
        backbone = backbone.merge_and_unload()
    tail = history[-min(50, len(history)):]
    summary = {"objective": OBJECTIVES[config.objective], **{k: meta[k] for k in ("dataset", "init", "lora", "config")},
               "final_loss": {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]} if tail else None,
               "validation": validation, "exported_step": best["step"] or config.steps,
               "command": command, "resumed_at": resumed_at}
    if accelerator.is_main_process:
        _export(folder, backbone, processor, summary)
    accelerator.wait_for_everyone()
    return summary


def _optimise(loss: torch.Tensor, params: list, optimizer, accelerator) -> None:
    """One optimiser step on `loss`, gradients clipped at norm 1."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, 1.0)
    optimizer.step()


def _model(config: PretrainConfig, init: Optional[str], lora: bool) -> tuple:
    """The backbone (LoRA-wrapped with `lora`) inside the masked-image model that trains it, and its processor."""
    backbone, processor = _backbone(config, init)
    if lora:
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(backbone, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    torch.manual_seed(config.seed + 1)
    return MaskedImageModel(backbone, config), processor


def _restore(checkpoint: Path, inner: nn.Module, optimizer, generator: torch.Generator, meta: dict) -> tuple:
    """(start step, loss history, resumed-at steps, validation losses, best weights) of an interrupted run."""
    saved = _load_checkpoint(checkpoint, inner, optimizer, generator, meta)
    start, validation = saved["step"], saved.get("validation", [])
    best = {"loss": None, "step": None, "weights": None}
    if saved.get("best_step"):
        best.update(step=saved["best_step"], loss=min(v["loss"] for v in validation),
                    weights={k[5:]: v for k, v in saved["tensors"].items() if k.startswith("best.")})
    return start, saved["history_tail"], [*saved.get("resumed_at", []), start], validation, best


def _check_run(folder: Path, config: PretrainConfig, init: Optional[str], lora: bool, resume: bool) -> bool:
    """Refuse what cannot run, before any work; whether `folder` holds an interrupted run (to resume)."""
    if lora and not init:
        raise UserError("--lora adapts an existing backbone: pass --init ID_OR_PATH")
    recover_folder(folder / "checkpoint", "state.json")
    interrupted = (folder / "checkpoint" / "state.json").exists()
    if interrupted and not resume:
        raise UserError(f"{folder} already holds a pretraining run; pass --resume to continue it or choose another "
                        "--out")
    if resume and not interrupted and (folder / "pretrain.json").exists():
        raise UserError(f"{folder} holds a finished backbone, so there is nothing to resume; drop --resume to train "
                        "it again from scratch, or choose another --out")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no")
    return interrupted


def _train_loader(dataset: str, config: PretrainConfig, processor, stream: Union[int, str]):
    """Batches of (augmented pixels, the objective's targets or None) from the train split, as stream `stream`."""
    train = pretrain_split(dataset, "train")
    if dataset.startswith("iu-phantom"):
        images = PhantomStream([r["phantom_findings"] for r in train.select_columns(["phantom_findings"])],
                               config.image_size + config.image_size // 8, stream)
    else:
        images = ImageStream(train, stream)
    rng = random.Random(stream)
    targets = _targets(train, config.objective)

    def collate(batch):
        if config.objective == "vicreg":
            views = [_strong_augment(im, rng) for _ in range(2) for im, _ in batch]
            return processor(images=views, return_tensors="pt")["pixel_values"], None
        pixels = processor(images=[_augment(im, rng) for im, _ in batch], return_tensors="pt")["pixel_values"]
        return pixels, None if targets is None else targets([row for _, row in batch])

    return torch.utils.data.DataLoader(images, batch_size=config.batch_size, num_workers=config.num_workers,
                                       collate_fn=collate)


def _export(folder: Path, backbone, processor, summary: dict) -> None:
    """The finished backbone, its processor and card into `folder`, pretrain.json last; the checkpoint removed."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=folder, prefix=".export-"))
    try:  # saved aside, then moved in, pretrain.json last: no weight file is ever half-written under its name
        backbone.save_pretrained(staged)
        processor.save_pretrained(staged)
        (staged / "README.md").write_text(_card(summary))
        for path in sorted(staged.iterdir()):
            os.replace(path, folder / path.name)
        atomic_write(folder / "pretrain.json", json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)  # the run is complete: the folder is a plain backbone


def _card(summary: dict) -> str:
    c = summary["config"]
    resumed = ""
    if summary.get("resumed_at"):
        steps = ", ".join(map(str, summary["resumed_at"]))
        resumed = (f"- Resumed at step {steps}: after a resumption the images come from a stream re-seeded at that "
                   "step, so an uninterrupted run of the command gives other weights.\n")
    supervised = c["objective"] in REPORT_SUPERVISED
    learned = ("the train split's (image, report) pairs, as chest X-ray encoders trained on report labels or report "
               "text are; no validation or test report shaped it beyond early stopping on validation"
               if supervised else "images alone; no labels")
    stopped = (f"- Exported: the weights at step {summary['exported_step']} (lowest validation loss).\n"
               if summary.get("validation") else "")
    if c.get("architecture", "dinov2") == "resnet":
        name, shape = "phantom-resnet", (f"`ResNetModel`, basic blocks [2, 2, 2, 2], widths {c['hidden_size'] // 8} to "
                                         f"{c['hidden_size']}, {c['image_size']} px; the embedding is the pooled "
                                         "last feature map")
    else:
        name, shape = "phantom-dino", (f"`Dinov2Model`, hidden {c['hidden_size']}, {c['num_layers']} layers, "
                                       f"{c['num_heads']} heads, patch {c['patch_size']}, {c['image_size']} px")
    kind = "report-supervised" if supervised else "self-supervised"
    return f"""---
library_name: transformers
tags: [{c.get('architecture', 'dinov2')}, chest-x-ray, phantom, {kind}]
license: apache-2.0
---
# {name}: a small backbone for saerad's offline demo

This backbone **knows only phantom radiographs**: procedurally drawn chest X-rays from `saerad.data.phantom`. It has
never seen a real radiograph and must not be used on one. It exists so that the SAE-Rad pipeline can run end to end
on a machine with no hub access, where RAD-DINO cannot be downloaded.

- Architecture: {shape}.
- Objective: {summary['objective']}; learnt from {learned}.
- Data: phantoms rendered with fresh patient seeds, findings drawn from the IU-phantom train split (never its
  validation or test images); {c['steps']} steps of {c['batch_size']} images.
- Final losses: {summary['final_loss']}.
{stopped}{resumed}
Reproduce: `{summary['command'] or 'saerad pretrain --dataset iu-phantom --out DIR'}`
"""
