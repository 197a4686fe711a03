"""SAE architectures, training side: one small class each behind `encode`, `decode`, `loss`, chosen by name.

All take inputs already scaled so that E||x|| = sqrt(d_in) and share the tensors `W_enc (d_in, d_sae)`,
`W_dec (d_sae, d_in)`, `b_dec (d_in,)`. Their inference forms live in `modeling_saerad.SparseAutoencoder`;
`export` returns exactly the tensors that form expects, with the input scale folded in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import UserError

# ReLU and gated training take the sparse path when at most this fraction of (row, feature) pairs is active (open
# gates for gated): measured on CPU (ReLU, d_in 192, d_sae 3072, batch 1024) it is 3x faster than the dense step at
# 0.7%, even near 1.5% and 1.3x slower at 2.3%.
SPARSE_DENSITY = 1 / 64


class LossOutput(NamedTuple):
    """Losses of one batch (each a scalar tensor), its reconstruction, and which features fired."""

    total: torch.Tensor
    mse: torch.Tensor  # mean over the batch of ||x - x_hat||^2
    sparsity: torch.Tensor  # the architecture's sparsity term, before its coefficient
    aux: torch.Tensor  # the auxiliary term (gated: frozen-decoder reconstruction; topk: AuxK), 0 if none
    x_hat: torch.Tensor  # (batch, d_in) reconstruction
    fired: torch.Tensor  # (d_sae,) bool: the feature was active on some row of the batch
    l0: torch.Tensor  # mean number of active features per row


def _stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`fired` and `l0` of dense activations."""
    active = f.detach() > 0
    return active.any(0), active.sum(-1).float().mean()


def _sparse_stats(values: torch.Tensor, cols: torch.Tensor, d_sae: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`fired` and `l0` of activations given as values at feature indices `cols`."""
    active = values.detach().reshape(-1) > 0
    fired = torch.zeros(d_sae, dtype=torch.bool, device=values.device).index_fill_(0, cols.reshape(-1)[active], True)
    return fired, active.sum().float() / rows


class SAE(nn.Module):
    """Shared tensors and the affine decoder."""

    architecture = "base"
    unit_norm_decoder = False
    lr_scale: dict = {}  # parameter name -> multiple of the learning rate it trains at (default 1)
    lr_settings: dict = {}  # parameter name -> the TrainConfig field whose value further multiplies its learning rate

    def __init__(self, d_in: int, d_sae: int, k: int = 0):
        super().__init__()
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @torch.no_grad()
    def initialize(self, b_dec: torch.Tensor, generator: torch.Generator, decoder_norm: float = 0.1) -> None:
        """Decoder rows in random directions of norm `decoder_norm`, encoder = decoder transpose, b_dec given."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator)
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True) * decoder_norm)
        self.W_enc.copy_(self.W_dec.t())
        self.b_dec.copy_(b_dec)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor, coef: float, dead: torch.Tensor = None) -> LossOutput:
        """The training loss (so that data-parallel wrappers see a forward pass)."""
        return self.loss(x, coef, dead)

    def pre(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + bias

    def mse(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return (x - x_hat).pow(2).sum(-1).mean()

    def export(self, scale: float) -> dict[str, torch.Tensor]:
        """Inference tensors acting on unscaled inputs: pre-activations and activations are unchanged."""
        out = {name: p.detach().clone().float() for name, p in self.named_parameters()}
        out["W_enc"] = out["W_enc"] * scale
        out["W_dec"] = out["W_dec"] / scale
        out["b_dec"] = out["b_dec"] / scale
        return out


class ReLUSAE(SAE):
    """Anthropic's April 2024 recipe: ReLU encoder, L1 of activations times decoder row norms, no norm constraint."""

    architecture = "relu"

    def __init__(self, d_in: int, d_sae: int, k: int = 0):
        super().__init__(d_in, d_sae, k)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre(x, self.b_enc))

    def loss(self, x: torch.Tensor, coef: float, dead: torch.Tensor = None) -> LossOutput:
        zero = torch.zeros((), device=x.device)
        pre = self.pre(x, self.b_enc)
        with torch.no_grad():
            rows, cols, offsets = _pairs(pre > 0)
        if len(rows) > pre.numel() * SPARSE_DENSITY:
            f = torch.relu(pre)
            x_hat = self.decode(f)
            mse = self.mse(x, x_hat)
            sparsity = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
            return LossOutput(mse + coef * sparsity, mse, sparsity, zero, x_hat, *_stats(f))
        # Sparse enough: decoding and the gradients touch only the active (row, feature) pairs, as for TopK.
        # Same loss and gradients as the dense form.
        values = torch.relu(_Selected.apply(_at(pre, rows, cols), x, self.b_dec, self.W_enc, self.b_enc, rows, cols))
        x_hat = _sparse_decode(values, cols, self.W_dec, offsets) + self.b_dec
        mse = self.mse(x, x_hat)
        sparsity = (values * self.W_dec.norm(dim=1)[cols]).sum() / len(x)
        stats = _sparse_stats(values, cols, self.d_sae, len(x))
        return LossOutput(mse + coef * sparsity, mse, sparsity, zero, x_hat, *stats)


class _Selected(torch.autograd.Function):
    """The encoder pre-activations (x - b_dec) W_enc (+ b_enc) at the pairs (rows, cols), given their values.

    The values are computed without autograd; backward touches only these entries (index_add into W_enc's columns
    and b_enc) instead of a dense (batch, d_sae) gradient and two dense matmuls. `b_enc` may be None.
    """

    @staticmethod
    def forward(ctx, values, x, b_dec, W_enc, b_enc, rows, cols):
        ctx.save_for_backward(x, b_dec, W_enc, rows, cols)
        ctx.has_bias = b_enc is not None
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        x, b_dec, W_enc, rows, cols = ctx.saved_tensors
        g = grad.reshape(-1)
        centred = (x - b_dec).index_select(0, rows)
        grad_w = torch.zeros(W_enc.shape[1], W_enc.shape[0], dtype=grad.dtype, device=grad.device)
        grad_w.index_add_(0, cols, centred * g.unsqueeze(1))
        per_feature = torch.zeros(W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_add_(0, cols, g)
        return None, None, -(W_enc @ per_feature), grad_w.t(), per_feature if ctx.has_bias else None, None, None


def _at(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The entries of a (batch, d_sae) tensor at the pairs (rows, cols), detached."""
    return t.detach().reshape(-1).index_select(0, rows * t.shape[1] + cols)


def _pairs(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, columns and per-row `embedding_bag` offsets of the True entries of a (batch, d_sae) mask, row-major."""
    rows, cols = active.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=active.shape[0])
    return rows, cols, counts.cumsum(0) - counts


def _sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor,
                   offsets: torch.Tensor = None) -> torch.Tensor:
    """sum_j values[:, j] W_dec[indices[:, j]] without materialising the dense (batch, d_sae) activations; with
    `offsets`, values and indices are flat and row i holds the pairs from offsets[i] on."""
    return nn.functional.embedding_bag(indices, W_dec, offsets, per_sample_weights=values, mode="sum")


class TopKSAE(SAE):
    """TopK (Gao et al. 2024): keep the k largest pre-activations (ReLU), unit-norm decoder rows, and the AuxK loss
    that lets dead latents reconstruct the residual. Training is sparse after the dense encoder matmul: k of
    d_sae latents per row are decoded and receive gradients."""

    architecture = "topk"
    unit_norm_decoder = True
    aux_coef = 1 / 32

    def __init__(self, d_in: int, d_sae: int, k: int = 32):
        super().__init__(d_in, d_sae, k)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.k_aux = max(1, d_in // 2)

    def initialize(self, b_dec, generator, decoder_norm: float = 1.0) -> None:
        super().initialize(b_dec, generator, decoder_norm=1.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x, self.b_enc)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def _select(self, x: torch.Tensor, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(k, dim=-1, sorted=False)
        rows = torch.arange(len(x), device=x.device).repeat_interleave(k)
        values = _Selected.apply(values, x, self.b_dec, self.W_enc, self.b_enc, rows, indices.reshape(-1))
        return torch.relu(values), indices

    def loss(self, x: torch.Tensor, coef: float, dead: torch.Tensor = None) -> LossOutput:
        with torch.no_grad():
            pre = self.pre(x, self.b_enc)
        values, indices = self._select(x, pre, self.k)
        x_hat = _sparse_decode(values, indices, self.W_dec) + self.b_dec
        mse = self.mse(x, x_hat)
        aux = torch.zeros((), device=x.device)
        if dead is not None and dead.any():
            k_aux = min(self.k_aux, int(dead.sum()))
            aux_values, aux_indices = self._select(x, pre.masked_fill_(~dead, float("-inf")), k_aux)
            residual = (x - x_hat).detach()
            aux = (residual - _sparse_decode(aux_values, aux_indices, self.W_dec)).pow(2).sum(-1).mean()
            aux = aux / residual.pow(2).sum(-1).mean().clamp_min(1e-8) * mse.detach()  # scale-free, as in the paper
        return LossOutput(mse + self.aux_coef * aux, mse, torch.zeros((), device=x.device), aux, x_hat,
                          *_sparse_stats(values, indices, self.d_sae, len(x)))


class _Step(torch.autograd.Function):
    """Heaviside step with a rectangle-kernel straight-through gradient for the threshold (JumpReLU)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(pre.dtype)
        return None, (-grad * near / ctx.bandwidth).sum(0), None


class _JumpReLU(torch.autograd.Function):
    """pre * H(pre - threshold); gradient to pre where active, straight-through to the threshold."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        active = (pre > threshold).to(pre.dtype)
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(pre.dtype)
        return grad * active, (-grad * threshold * near / ctx.bandwidth).sum(0), None


class JumpReLUSAE(SAE):
    """JumpReLU (Rajamanoharan et al. 2024b): learned per-feature thresholds trained through straight-through
    estimators, and an L0 penalty."""

    architecture = "jumprelu"
    bandwidth = 0.2  # wide enough, for inputs scaled to E||x|| = sqrt(d_in), that thresholds learn in ~1k steps
    # Adam moves a log-threshold by at most ~lr per step, too slowly to reach the thresholds a target L0 needs: on
    # the synthetic atoms the run ended at L0 26.7 for a target of 8 at lr 1e-3; at 20x, 7.7 for 8 but 7.2 for 5; at
    # this scale 7.7-7.8 and 5.0-5.4.
    lr_scale = {"log_threshold": 50.0}

    def __init__(self, d_in: int, d_sae: int, k: int = 0):
        super().__init__(d_in, d_sae, k)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.log_threshold = nn.Parameter(torch.full((d_sae,), -3.0))  # threshold e^-3 ~ 0.05

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.pre(x, self.b_enc))
        return _JumpReLU.apply(pre, self.log_threshold.exp(), self.bandwidth)

    def loss(self, x: torch.Tensor, coef: float, dead: torch.Tensor = None) -> LossOutput:
        pre = torch.relu(self.pre(x, self.b_enc))
        threshold = self.log_threshold.exp()
        f = _JumpReLU.apply(pre, threshold, self.bandwidth)
        x_hat = self.decode(f)
        mse = self.mse(x, x_hat)
        l0 = _Step.apply(pre, threshold, self.bandwidth).sum(-1).mean()
        zero = torch.zeros((), device=x.device)
        return LossOutput(mse + coef * l0, mse, l0, zero, x_hat, *_stats(f))

    def export(self, scale: float) -> dict[str, torch.Tensor]:
        out = super().export(scale)
        out["threshold"] = out.pop("log_threshold").exp()
        return out


def _row_chunks(t: torch.Tensor) -> int:
    """Rows of a (batch, d_sae) tensor per chunk: ~32 MB, so that a chunk's GEMM output is still in cache for the
    elementwise passes that follow it, and the GEMM is still a large one."""
    return max(64, (1 << 23) // t.shape[1])


class _GatedDense(torch.autograd.Function):
    """The gated SAE's dense training pass, forward and backward written out: from `x` to the reconstruction
    `x_hat` and the gate path's frozen-decoder reconstruction `gate_hat` (both without b_dec) and the
    sparsity term, with the fewest GEMMs the loss allows (forward: P = centred W_enc, f W_dec, gate W_dec; backward:
    two into d_sae, one into W_dec, one into W_enc; b_dec's gradient through P is a matrix-vector product). The GEMMs
    into d_sae run a chunk of rows at a time, each followed by its elementwise work while the chunk is in cache;
    masks are read off f and gate themselves (both >= 0, so sign() is the mask). Three (batch, d_sae) buffers live:
    P, f and gate; backward turns P into its gradient. Same loss and gradients as the autograd form
    (tests/test_train.py checks)."""

    @staticmethod
    def forward(ctx, x, W_enc, b_gate, r_mag, b_mag, W_dec, b_dec):
        centred = x - b_dec
        n, d_sae = len(centred), W_enc.shape[1]
        P = torch.empty(n, d_sae, dtype=centred.dtype, device=centred.device)
        F, G = torch.empty_like(P), torch.empty_like(P)
        chunk, scale = _row_chunks(P), r_mag.exp()
        gate_sum, counts = torch.zeros_like(b_gate), torch.zeros_like(b_gate)  # counts: rows each feature fires on
        for s in range(0, n, chunk):
            p, f, g = P[s : s + chunk], F[s : s + chunk], G[s : s + chunk]
            torch.mm(centred[s : s + chunk], W_enc, out=p)
            torch.add(p, b_gate, out=g).clamp_(min=0)  # ReLU(pi_gate); > 0 exactly where the gate is open
            torch.addcmul(b_mag, p, scale, out=f).clamp_(min=0).mul_(torch.sign(g))
            gate_sum += g.sum(0)
            counts += torch.sign(f).sum(0)  # f >= 0: its sign is 1 where the feature fires
        norms = W_dec.norm(dim=1)
        x_hat, gate_hat = F @ W_dec, G @ W_dec
        fired, l0 = counts > 0, (counts.sum(dtype=torch.float64) / n).to(P.dtype)
        ctx.save_for_backward(centred, W_enc, b_gate, r_mag, W_dec, norms, gate_sum)  # centred: (batch, d_in)
        ctx.buffers = (P, F, G)
        ctx.mark_non_differentiable(fired, l0)  # statistics, not terms of the loss
        return x_hat, gate_hat, (gate_sum @ norms) / n, fired, l0

    @staticmethod
    def backward(ctx, g_xhat, g_gatehat, g_sparsity, _fired, _l0):
        centred, W_enc, b_gate, r_mag, W_dec, norms, gate_sum = ctx.saved_tensors
        P, F, G = ctx.buffers
        ctx.buffers = None
        n, scale, chunk = len(P), r_mag.exp(), _row_chunks(P)
        per_gate = g_sparsity * norms / n  # d(sparsity term) / d ReLU(pi_gate)
        unit_rows = W_dec / norms.clamp_min(1e-12).unsqueeze(1)
        grad_W_dec = torch.addmm((g_sparsity / n) * gate_sum.unsqueeze(1) * unit_rows, F.t(), g_xhat)
        grad_b_gate, grad_r_mag, grad_b_mag = (torch.zeros_like(b_gate) for _ in range(3))
        gf, gg = torch.empty(chunk, P.shape[1], dtype=P.dtype), torch.empty(chunk, P.shape[1], dtype=P.dtype)
        for s in range(0, n, chunk):
            p = P[s : s + chunk]
            m = len(p)
            torch.mm(g_xhat[s : s + chunk], W_dec.t(), out=gf[:m])
            gf[:m].mul_(torch.sign(F[s : s + chunk]))  # d/d pi_mag: f > 0 where the gate is open and pi_mag > 0
            grad_b_mag += gf[:m].sum(0)
            grad_r_mag += (gf[:m] * p).sum(0)
            torch.mm(g_gatehat[s : s + chunk], W_dec.t(), out=gg[:m])
            gg[:m].add_(per_gate).mul_(torch.sign(G[s : s + chunk]))  # d/d pi_gate
            grad_b_gate += gg[:m].sum(0)
            torch.addcmul(gg[:m], gf[:m], scale, out=p)  # P now holds d/d P
        grad_r_mag *= scale
        grad_W_enc = centred.t() @ P
        return None, grad_W_enc, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec, -(W_enc @ P.sum(0))


class GatedSAE(SAE):
    """The paper's hybrid: a Gated SAE (Rajamanoharan et al. 2024) trained with Anthropic's April 2024 recipe.

    Gate and magnitude paths share `W_enc`; the magnitude path rescales it per feature by exp(r_mag).
        pi_gate = (x - b_dec) W_enc + b_gate           f_gate = H(pi_gate)
        pi_mag  = (x - b_dec) (W_enc * exp(r_mag)) + b_mag
        f = f_gate * ReLU(pi_mag)                       x_hat = f W_dec + b_dec
    Loss (our reading of SAE-Rad's Eq. 9, which is not public):
        ||x - x_hat||^2                                          reconstruction
      + lambda * sum_i ReLU(pi_gate)_i * ||W_dec,i||              sparsity on the gate, weighted by decoder norms
      + ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2           auxiliary: the gate path reconstructs through a
                                                                  frozen (stop-gradient) decoder
    with no unit-norm constraint on the decoder.
    """

    architecture = "gated"
    lr_settings = {"b_gate": "gate_lr_scale", "b_mag": "magnitude_lr_scale", "r_mag": "magnitude_lr_scale"}

    def __init__(self, d_in: int, d_sae: int, k: int = 0):
        super().__init__(d_in, d_sae, k)
        self.b_gate = nn.Parameter(torch.zeros(d_sae))
        self.r_mag = nn.Parameter(torch.zeros(d_sae))
        self.b_mag = nn.Parameter(torch.zeros(d_sae))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        projection = (x - self.b_dec) @ self.W_enc  # one matmul for both paths
        return (projection + self.b_gate > 0) * torch.relu(projection * self.r_mag.exp() + self.b_mag)

    def loss(self, x: torch.Tensor, coef: float, dead: torch.Tensor = None) -> LossOutput:
        with torch.no_grad():  # the share of open gates decides the path, read off 64 rows of the batch
            sample = (x[:: max(1, len(x) // 64)] - self.b_dec) @ self.W_enc + self.b_gate
            dense = float((sample > 0).float().mean()) > SPARSE_DENSITY
        if dense:
            f_dec, gate_hat, sparsity, *stats = _GatedDense.apply(x, self.W_enc, self.b_gate, self.r_mag, self.b_mag,
                                                                  self.W_dec, self.b_dec)
            x_hat = f_dec + self.b_dec
        else:
            with torch.no_grad():
                projection = (x - self.b_dec) @ self.W_enc  # both paths' pre-activations come from this one matmul
            # Every term lives on the open gates (closed gates give f = 0 and ReLU(pi_gate) = 0, and the Heaviside
            # passes no gradient), so decoding and the gradients touch only those pairs. Same loss and gradients.
            rows, cols, offsets = _pairs(projection + self.b_gate > 0)
            selected = _Selected.apply(_at(projection, rows, cols), x, self.b_dec, self.W_enc, None, rows, cols)
            gate = torch.relu(selected + self.b_gate[cols])
            f = torch.relu(selected * self.r_mag.exp()[cols] + self.b_mag[cols])
            x_hat = _sparse_decode(f, cols, self.W_dec, offsets) + self.b_dec
            sparsity = (gate * self.W_dec.norm(dim=1)[cols]).sum() / len(x)
            gate_hat = _sparse_decode(gate, cols, self.W_dec.detach(), offsets)
            stats = _sparse_stats(f, cols, self.d_sae, len(x))
        mse = self.mse(x, x_hat)
        aux = (x - (gate_hat + self.b_dec.detach())).pow(2).sum(-1).mean()
        return LossOutput(mse + coef * sparsity + aux, mse, sparsity, aux, x_hat, *stats)


ARCHITECTURES = {cls.architecture: cls for cls in (GatedSAE, TopKSAE, JumpReLUSAE, ReLUSAE)}


def make_sae(architecture: str, d_in: int, d_sae: int, k: int = 32) -> SAE:
    """The training-side SAE of an architecture name."""
    if architecture not in ARCHITECTURES:
        raise UserError(f"architecture must be one of {sorted(ARCHITECTURES)}; got {architecture!r}")
    return ARCHITECTURES[architecture](d_in, d_sae, k)
