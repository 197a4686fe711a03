"""SAE training on cached embeddings with Accelerate: resumable, data-parallel, exported for `saerad build`."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from .. import __version__
from ..checkpoints import check_settings, load_training_state, read_checkpoint, training_state, write_checkpoint
from ..configs import DEFAULT_COEF, TrainConfig
from ..errors import UserError
from ..outputs import atomic_save_tensors, atomic_write, recover_folder
from .architectures import SAE, make_sae

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
# Initial sparsity coefficients for inputs scaled to E||x|| = sqrt(d_in) (the target-L0 controller moves them).
L0_TOLERANCE = 0.25  # a run whose mean L0 ends further than this from target_l0 says so


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def geometric_median(x: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Weiszfeld's algorithm, started at the mean."""
    median = x.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(1e-6)
        median = (weights[:, None] * x).sum(0) / weights.sum()
    return median


MIN_ROWS = 2


def check_trainable(x: torch.Tensor, source: str) -> None:
    """Refuse, before any step, embeddings an SAE cannot learn from: fewer than 2 rows, NaN or infinite values,
    values whose squares overflow float32 (1e30), or rows all identical (all zero included: the input scale is
    undefined, and training ended in a ZeroDivisionError after leaving a checkpoint)."""
    n = x.shape[0]
    if n < MIN_ROWS:
        raise UserError(f"{source}: {n} row{'s' * (n != 1)} of embeddings; an SAE needs at least {MIN_ROWS}")
    if not torch.isfinite(x).all():
        raise UserError(f"{source}: the embeddings contain NaN or infinite values")
    if not torch.isfinite(x.norm(dim=1)).all() or not torch.isfinite(x.norm(dim=1).mean()):
        raise UserError(f"{source}: values up to {x.abs().max().item():.3g} overflow float32 when squared; rescale "
                        "the embeddings")
    if bool((x == x[0]).all()):
        raise UserError(f"{source}: all {n} rows are identical{' (all zero)' if not x[0].any() else ''}; there is "
                        "nothing to learn")


class Trainer:
    """Trains one SAE on an `(n, d_in)` embedding matrix; `accelerator` handles devices and processes."""

    def __init__(self, config: TrainConfig, embeddings: torch.Tensor, out: str, accelerator=None, meta: dict = None):
        from accelerate import Accelerator

        self.cfg, self.out, self.meta = config, Path(out), meta or {}
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        x = embeddings.float()
        check_trainable(x, self.meta.get("embeddings", "the embeddings"))
        n, d_in = x.shape
        # Inputs scaled so that E||x|| = sqrt(d_in); the scale is folded into the exported weights.
        self.scale = float(math.sqrt(d_in) / x.norm(dim=1).mean().clamp_min(1e-12))
        self.x = x * self.scale
        self.fingerprint = hashlib.sha256(x.contiguous().numpy()).hexdigest()  # resume refuses others (no copy)
        self.n = n
        world = self.acc.num_processes
        self.batch = min(config.batch_size, n if n < world else n - n % world)
        if self.batch % world:
            raise UserError(f"batch_size {self.batch} must be divisible by the number of processes ({world})")
        self.local = self.batch // world
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.dead_window = config.dead_window or min(n, 1_000_000)
        self.controller_start = int(0.25 * self.total_steps)
        k = config.k or (int(round(config.target_l0)) if config.target_l0 else 32)
        d_sae = config.d_sae or d_in * config.expansion_factor
        if config.architecture == "topk" and not 1 <= k <= d_sae:
            raise UserError(f"k must be in [1, d_sae={d_sae}]; got {k}")
        generator = torch.Generator().manual_seed(config.seed)
        sample = self.x[torch.randperm(n, generator=generator)[:10_000]]
        self.sae: SAE = make_sae(config.architecture, d_in, d_sae, k)
        fixed = config.decoder_bias == "mean"
        self.sae.initialize(self.x.mean(0) if fixed else geometric_median(sample), generator)
        self.sae.b_dec.requires_grad_(not fixed)
        scales = {}
        for name, p in self.sae.named_parameters():
            if not p.requires_grad:
                continue
            setting = self.sae.lr_settings.get(name)
            scale = self.sae.lr_scale.get(name, 1.0) * (getattr(config, setting) if setting else 1.0)
            scales.setdefault(scale, []).append(p)
        groups = [{"params": ps, "lr_scale": s} for s, ps in scales.items()]
        # fused: one pass over each parameter's state instead of several (CPU and CUDA; 75M parameters at x64)
        fused = self.acc.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(groups, lr=config.lr, fused=fused or None)
        self.model, self.optimizer = self.acc.prepare(self.sae, self.optimizer)
        self.step = 0
        self.coef = config.sparsity_coef if config.sparsity_coef is not None else DEFAULT_COEF[config.architecture]
        self.l0_ema: Optional[float] = None
        self.since_fired = torch.zeros(d_sae)

    # schedule -------------------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        warm = max(1, int(self.cfg.warmup_frac * self.total_steps))
        decay_start = int((1 - self.cfg.decay_frac) * self.total_steps)
        factor = min(1.0, (step + 1) / warm)
        if step >= decay_start:
            factor *= max(0.0, (self.total_steps - step) / max(1, self.total_steps - decay_start))
        return self.cfg.lr * factor

    def coef_at(self, step: int) -> float:
        warm = max(1, int(self.cfg.warmup_frac * self.total_steps))
        return self.coef * min(1.0, (step + 1) / warm)

    def batch_rows(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if getattr(self, "_order_epoch", None) != epoch:  # one permutation per epoch, a function of seed and epoch
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._order, self._order_epoch = torch.randperm(self.n, generator=generator), epoch
        order = self._order
        start = position * self.batch + self.acc.process_index * self.local
        return order[start : start + self.local]

    # the loop ---------------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train (resuming when a checkpoint exists and `resume` was asked for), export, return the metrics."""
        from tqdm.auto import tqdm

        last = min(self.total_steps, self.cfg.max_steps or self.total_steps)
        bar = tqdm(total=last, initial=self.step, desc=f"training {self.cfg.architecture} SAE", unit="step",
                   disable=not self.acc.is_local_main_process)
        for step in range(self.step, last):
            out = self._train_step(step)
            self._log_if_needed(step, out)
            self._checkpoint_if_needed(step)
            bar.update(1)
        bar.close()
        self._save_checkpoint()
        return self.export() if last == self.total_steps else {}

    def _train_step(self, step: int) -> dict:
        x = self.x[self.batch_rows(step)].to(self.acc.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step) * group["lr_scale"]
        dead = (self.since_fired >= self.dead_window).to(self.acc.device)
        out = self.model(x, self.coef_at(step), dead)
        if not torch.isfinite(out.total):
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss is {out.total.item()}; the last good checkpoint in "
                f"{self.out / 'checkpoint'} is intact; lower --lr or the sparsity coefficient")
        self.optimizer.zero_grad(set_to_none=True)
        self.acc.backward(out.total)
        if self.sae.unit_norm_decoder:  # keep only the gradient tangent to the unit sphere of each decoder row
            w, g = self.sae.W_dec, self.sae.W_dec.grad
            g -= (g * w).sum(1, keepdim=True) * w
        self.acc.clip_grad_norm_(self.sae.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        if self.sae.unit_norm_decoder:
            with torch.no_grad():
                self.sae.W_dec /= self.sae.W_dec.norm(dim=1, keepdim=True)
        fired = self.acc.reduce(out.fired.float(), "sum").cpu() > 0
        self.since_fired += self.batch
        self.since_fired[fired] = 0
        l0 = float(self.acc.reduce(out.l0.detach(), "mean"))
        self.l0_ema = l0 if self.l0_ema is None else 0.9 * self.l0_ema + 0.1 * l0
        if self.cfg.target_l0 and self.cfg.architecture != "topk" and step >= self.controller_start:
            # L0 answers the coefficient with a lag, and a gate closed everywhere never reopens: so the controller
            # waits for the features to form, lowers the coefficient faster than it raises it, and stays in bounds.
            error = max(-1.0, min(1.0, math.log(max(self.l0_ema, 1e-3) / self.cfg.target_l0)))
            gain = self.cfg.l0_gain * (1.0 if error > 0 else 4.0)
            initial = self.cfg.sparsity_coef or DEFAULT_COEF[self.cfg.architecture]
            self.coef = min(initial * 5, max(initial / 20, self.coef * math.exp(gain * error)))
        self.step = step + 1
        return {"loss": float(out.total.detach()), "mse": float(out.mse.detach()), "l0": l0, "coef": self.coef_at(step),
                "lr": self.lr_at(step)}

    def _log_if_needed(self, step: int, out: dict) -> None:
        if self.cfg.log_every and (step + 1) % self.cfg.log_every == 0:
            out["dead_fraction"] = float((self.since_fired >= self.dead_window).float().mean())
            out["fvu_batch"] = out["mse"] / float(self.x.var(0).sum())
            self.acc.log(out, step=step + 1)
            logger.info("step %d %s", step + 1, " ".join(f"{k}={v:.4g}" for k, v in out.items()))

    def _checkpoint_if_needed(self, step: int) -> None:
        if self.cfg.checkpoint_every and (step + 1) % self.cfg.checkpoint_every == 0:
            self._save_checkpoint()

    # checkpoints ------------------------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict, dict]:
        tensors, adam_steps = training_state(self.sae, self.optimizer)
        tensors["since_fired"] = self.since_fired.clone()
        meta = {"format_version": FORMAT_VERSION, "step": self.step, "coef": self.coef, "l0_ema": self.l0_ema,
                "adam_steps": adam_steps, "config": asdict(self.cfg), "scale": self.scale,
                "embeddings_sha256": self.fingerprint}
        return tensors, meta

    def _save_checkpoint(self) -> None:
        if self.acc.is_main_process:
            write_checkpoint(self.out / "checkpoint", *self._state())

    def resume(self) -> bool:
        """Load the checkpoint in `out/checkpoint` if there is one; True when something was loaded."""
        folder = self.out / "checkpoint"
        found = read_checkpoint(folder)
        if found is None:
            return False
        meta, tensors = found
        if meta.get("embeddings_sha256", self.fingerprint) != self.fingerprint:
            raise UserError(f"{folder}: checkpoint was trained on other embeddings than these; resume with the "
                            "embeddings it was made with, or choose a new --out")
        # A setting added after the checkpoint was written takes its default; before magnitude_lr_scale existed,
        # gate_lr_scale also scaled the magnitude path.
        written = {"magnitude_lr_scale": meta["config"].get("gate_lr_scale", 1.0), **meta["config"]}
        check_settings(folder, {**asdict(TrainConfig()), **written}, asdict(self.cfg),
                       free=("max_steps", "checkpoint_every"))
        load_training_state(self.sae, self.optimizer, tensors, meta["adam_steps"])
        self.since_fired = tensors["since_fired"]
        self.step, self.coef, self.l0_ema = meta["step"], meta["coef"], meta["l0_ema"]
        logger.info("resumed from %s at step %d", folder, self.step)
        return True

    # export -----------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, batch: int = 4096) -> tuple[dict, dict]:
        """Whole-training-set metrics with the final weights, and per-feature statistics."""
        d_sae = self.sae.d_sae
        sq_err, count, l0_sum = 0.0, torch.zeros(d_sae), 0.0
        total, peak = torch.zeros(d_sae), torch.zeros(d_sae)
        mean = self.x.mean(0)
        for start in range(0, self.n, batch):
            x = self.x[start : start + batch].to(self.acc.device)
            f = self.sae.encode(x)
            sq_err += float((x - self.sae.decode(f)).pow(2).sum())
            active = (f > 0).float().cpu()
            count += active.sum(0)
            l0_sum += float(active.sum())
            total += f.sum(0).cpu()
            peak = torch.maximum(peak, f.max(0).values.cpu())
        variance = float((self.x - mean).pow(2).sum())
        frequency = count / self.n
        log_freq = torch.log10(frequency[frequency > 0])
        edges = list(range(-7, 1))
        histogram = {"log10_frequency_edges": edges,
                     "counts": torch.histc(log_freq, bins=len(edges) - 1, min=-7, max=0).long().tolist(),
                     "never_fired": int((frequency == 0).sum())}
        metrics = {"mse": sq_err / (self.n * self.sae.d_in), "fvu": sq_err / variance, "l0": l0_sum / self.n,
                   "dead_fraction": float((self.since_fired >= self.dead_window).float().mean()),
                   "dead_window": self.dead_window, "n": self.n, "steps": self.step, "sparsity_coef": self.coef,
                   "input_scale": self.scale, "feature_density_histogram": histogram}
        if self.cfg.target_l0 and self.cfg.architecture != "topk":
            metrics["target_l0"] = self.cfg.target_l0
            metrics["target_l0_reached"] = abs(metrics["l0"] - self.cfg.target_l0) <= L0_TOLERANCE * self.cfg.target_l0
        stats = {"frequency": frequency, "mean_activation": total / count.clamp_min(1), "max_activation": peak}
        return metrics, stats

    def export(self) -> dict:
        """Write `sae_config.json`, `sae.safetensors`, `feature_stats.safetensors`, `training_metrics.json`."""
        metrics, stats = self.measure()
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            config = {
                "format_version": FORMAT_VERSION, "saerad_version": __version__,
                "architecture": self.sae.architecture, "d_in": self.sae.d_in, "d_sae": self.sae.d_sae,
                "k": self.sae.k, "input_scale": 1.0, "training_input_scale": self.scale,
                "train_config": asdict(self.cfg), "num_processes": self.acc.num_processes, **self.meta,
            }
            atomic_save_tensors(self.sae.export(self.scale), self.out / "sae.safetensors")
            atomic_save_tensors({k: v.float() for k, v in stats.items()}, self.out / "feature_stats.safetensors")
            atomic_write(self.out / "sae_config.json", json.dumps(config, indent=2))
            atomic_write(self.out / "training_metrics.json", json.dumps(metrics, indent=2))
            if metrics.get("target_l0_reached") is False:
                logger.warning(
                    f"mean L0 {metrics['l0']:.1f} did not settle within {L0_TOLERANCE:.0%} of --target-l0 "
                    f"{self.cfg.target_l0:g} (final sparsity coefficient {self.coef:.3g}); the controller is bounded "
                    "to 1/20-5x its initial value, so try another --sparsity-coef, more --epochs, --gate-lr-scale 100 "
                    "(gated), or --architecture topk")
        self.acc.wait_for_everyone()
        return metrics


def train(embeddings: str, out: str, config: TrainConfig, resume: bool = False, log_with: Optional[str] = None) -> dict:
    """Train an SAE on an embedding cache (or .npy / .safetensors file) into `out`."""
    from accelerate import Accelerator

    from ..embed import load_embeddings, read_manifest

    x, _ = load_embeddings(embeddings)
    check_trainable(x.float(), str(embeddings))  # before anything is written under --out
    manifest = read_manifest(embeddings)
    meta = {"embeddings": str(embeddings)}
    if manifest:
        meta.update({k: manifest.get(k) for k in ("backbone", "backbone_revision", "backbone_sha256", "pooling",
                                                  "dataset", "split")})
    out_path = Path(out)
    recover_folder(out_path / "checkpoint", "state.json")
    if not resume and (out_path / "checkpoint").exists():
        raise UserError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=log_with,
                              project_dir=str(out_path) if log_with else None)
    if log_with:
        accelerator.init_trackers("saerad-train", config=asdict(config))
    trainer = Trainer(config, x, out, accelerator, meta)
    if resume:
        trainer.resume()
    metrics = trainer.train()
    if log_with:
        accelerator.end_training()
    return metrics
