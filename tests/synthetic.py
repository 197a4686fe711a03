"""Synthetic embeddings with known structure."""

import torch


def sparse_atoms(n: int = 20000, d: int = 64, atoms: int = 256, k: int = 4, seed: int = 0, noise: float = 0.01):
    """x = sum of k of `atoms` random unit atoms with positive coefficients, plus small noise; returns (x, atoms,
    indices of the active atoms per row)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(atoms, d, generator=g)
    a /= a.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:k] for _ in range(n)])
    coef = torch.rand(n, k, generator=g) * 0.9 + 0.1
    x = torch.einsum("nk,nkd->nd", coef, a[idx]) + noise * torch.randn(n, d, generator=g)
    return x, a, idx


def recovery(decoder: torch.Tensor, atoms: torch.Tensor) -> float:
    """Mean over atoms of the best cosine similarity with a decoder row."""
    w = decoder / decoder.norm(dim=1, keepdim=True)
    return float((atoms @ w.T).max(dim=1).values.mean())
