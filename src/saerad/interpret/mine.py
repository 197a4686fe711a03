"""Exemplar mining in one streaming pass: per-feature top-k activations, firing frequency, mean and max.

Memory is O(d_sae * (k + batch)), plus O(n * L0) for the firing pairs when asked; the dense (n, d_sae) activation
matrix is never held.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from modeling_saerad import SparseAutoencoder

from ..errors import MissingInput, UserError, first_line


def read_sae_config(folder: str) -> dict:
    """`sae_config.json` of an SAE folder, its fields checked (a JSON object, sizes positive integers)."""
    from ..files import read_json

    path = Path(folder)
    if not (path / "sae_config.json").exists() or not (path / "sae.safetensors").exists():
        raise MissingInput(f"{folder}: no sae_config.json and sae.safetensors; run `saerad train` first")
    config = read_json(path / "sae_config.json", "SAE config")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
    if not (whole(config.get("d_in")) and whole(config.get("d_sae")) and isinstance(config.get("architecture"), str)
            and (config.get("k") is None or whole(config.get("k")))):
        raise UserError(f"{path / 'sae_config.json'}: expected d_in, d_sae (positive integers), architecture and k; "
                        "not an SAE config `saerad train` wrote")
    return config


def read_sae_weights(folder: str) -> dict:
    """`sae.safetensors` of an SAE folder; a damaged file, or a link to something else, refused in one line."""
    from ..embed import _read_tensors

    return _read_tensors(Path(folder) / "sae.safetensors")


def load_sae(folder: str) -> tuple[SparseAutoencoder, dict]:
    """The inference SAE written by `saerad train` (input scale folded in) and its `sae_config.json`."""
    config = read_sae_config(folder)
    try:
        sae = SparseAutoencoder(config["d_in"], config["d_sae"], config["architecture"], config["k"] or 1,
                                config.get("input_scale", 1.0))
        sae.load_state_dict(read_sae_weights(folder))
    except (ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"{folder}: the SAE does not load ({first_line(err)})") from None
    return sae.eval(), config


@dataclass
class Mined:
    """Per-feature exemplars and statistics."""

    top_values: torch.Tensor  # (d_sae, k) activations, descending; zeros where a feature fired < k times
    top_rows: torch.Tensor  # (d_sae, k) row numbers into the mined embeddings (-1 where empty)
    frequency: torch.Tensor  # (d_sae,) fraction of rows where the feature fired
    mean_activation: torch.Tensor  # (d_sae,) mean activation when firing
    max_activation: torch.Tensor  # (d_sae,)
    n: int
    firing: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (rows, features) of every activation, if kept

    def firing_rows(self) -> list[list[int]]:
        """For each feature, the rows where it fired (needs `mine(..., keep_firing=True)`)."""
        rows, feats = self.firing
        order = torch.argsort(feats, stable=True)
        counts = torch.bincount(feats, minlength=len(self.frequency)).tolist()
        return [part.tolist() for part in torch.split(rows[order], counts)]

    def exemplars(self, feature: int) -> list[tuple[int, float]]:
        """(row, activation) of a feature's exemplars, strongest first."""
        return [(int(r), float(v)) for r, v in zip(self.top_rows[feature], self.top_values[feature]) if v > 0]


@torch.no_grad()
def mine(sae: SparseAutoencoder, x: torch.Tensor, k: int = 32, batch_size: int = 4096,
         keep_firing: bool = False) -> Mined:
    """Stream `x` through the SAE keeping each feature's k strongest rows (ties: earlier row first), and with
    `keep_firing` where every feature fired (O(n * L0) memory)."""
    d_sae = sae.W_enc.shape[1]
    top_values = torch.zeros(d_sae, k)
    top_rows = torch.full((d_sae, k), -1, dtype=torch.long)
    count, total = torch.zeros(d_sae), torch.zeros(d_sae)
    peak = torch.zeros(d_sae)
    fired_rows, fired_feats = [], []
    for start in range(0, len(x), batch_size):
        f = sae.encode(sae.normalize(x[start : start + batch_size].float()))  # (b, d_sae)
        rows, feats = f.nonzero(as_tuple=True)  # activations are sparse: one dense pass, then sparse work
        values = f[rows, feats]
        if keep_firing:
            fired_rows.append((rows + start).int())
            fired_feats.append(feats.int())
        count += torch.bincount(feats, minlength=d_sae)
        total += torch.bincount(feats, weights=values, minlength=d_sae)
        peak = peak.scatter_reduce(0, feats, values, reduce="amax")
        # Only activations above a feature's current k-th best can enter its top k: merge just those.
        keep = values > top_values[feats, -1]
        rows, feats = rows[keep], feats[keep]
        if len(rows) == 0:
            continue
        order = torch.argsort(feats, stable=True)  # stable: within a feature, earlier rows first
        rows, feats = rows[order], feats[order]
        per_feature = torch.bincount(feats, minlength=d_sae)
        slot = torch.arange(len(feats)) - (torch.cumsum(per_feature, 0) - per_feature)[feats]
        width = int(per_feature.max())
        cand_values = torch.zeros(d_sae, width)
        cand_rows = torch.full((d_sae, width), -1, dtype=torch.long)
        cand_values[feats, slot] = f[rows, feats]
        cand_rows[feats, slot] = rows + start
        values = torch.cat([top_values, cand_values], dim=1)  # current best first, so earlier rows win ties
        best = values.topk(k, dim=1, sorted=True)
        top_values, top_rows = best.values, torch.cat([top_rows, cand_rows], dim=1).gather(1, best.indices)
    top_rows = torch.where(top_values > 0, top_rows, torch.full_like(top_rows, -1))
    firing = (torch.cat(fired_rows).long(), torch.cat(fired_feats).long()) if keep_firing and fired_rows else None
    return Mined(top_values, top_rows, count / len(x), total / count.clamp_min(1), peak, len(x), firing)
