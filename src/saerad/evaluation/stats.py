"""Bootstrap confidence intervals and the paired approximate-randomisation test over per-report statistics."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(metric, stats: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of every key of `metric.aggregate`, resampling reports with replacement."""
    rng = np.random.default_rng(seed)
    n = len(stats)
    draws = [metric.aggregate(stats[rng.integers(0, n, n)]) for _ in range(n_resamples)]
    tail = (1 - level) / 2 * 100
    return {key: [float(np.percentile([d[key] for d in draws], tail)),
                  float(np.percentile([d[key] for d in draws], 100 - tail))] for key in draws[0]}


def paired_randomization(metric, stats_a: np.ndarray, stats_b: np.ndarray, key: str, n_resamples: int = 1000,
                         seed: int = 0) -> dict:
    """Two systems on the same references: p-value that |metric(a) - metric(b)| is as large by chance, swapping
    each report's statistics between the systems with probability 1/2 (approximate randomisation)."""
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"systems must be scored on the same reports; got {stats_a.shape} and {stats_b.shape}")
    rng = np.random.default_rng(seed)
    observed = metric.aggregate(stats_a)[key] - metric.aggregate(stats_b)[key]
    hits = 0
    for _ in range(n_resamples):
        swap = rng.random(len(stats_a)) < 0.5
        a = np.where(swap[:, None], stats_b, stats_a)
        b = np.where(swap[:, None], stats_a, stats_b)
        hits += abs(metric.aggregate(a)[key] - metric.aggregate(b)[key]) >= abs(observed) - 1e-12
    return {"difference": float(observed), "p_value": (hits + 1) / (n_resamples + 1)}
