"""FastAP as a PyTorch loss: ``FastAPLoss(embeddings N x D, labels N) -> 1 - mean AP``.

The loss is the authors' ``FastAP.m`` (see :mod:`reproduce.loss.fastap_matlab` for the literal,
stage-by-stage version), written for speed. Squared distances ``dist2 = max(0, 2 - 2 X X^T)``
are spread over ``L = num_bins + 1`` bin centres ``Z_l = l * Delta`` (``Delta = 4 /
num_bins``) by triangular pulses, so each distance touches at most two bins: with
``k = ceil(dist2 / Delta) - 1`` a distance in ``(Z_k, Z_k+1]`` puts weight ``1 - frac`` in bin
``k`` and ``frac`` in bin ``k + 1``. The forward therefore scatter-adds two weights per pair
into the ``N x L`` histograms, and the backward gathers one difference of histogram
gradients per pair: ``d obj / d dist2_ij = (g[i, k+1] - g[i, k]) / Delta``. No
``N x N x L`` tensor and no ``N x N`` diagonal products exist; the work is two
``N x N x D`` matrix products (``X X^T`` forward, ``G X`` backward) plus O(N^2) elementwise
passes. The elementwise passes run on blocks of rows (about a million pairs each), so their
temporaries stay in cache and no N x N float temporary is ever allocated in the forward; the
only N x N arrays are the bin column of every pair (one byte each, kept for the backward)
and, in the backward, ``G``, symmetrised in place tile by tile. Peak memory by design: about
1.25 ``N x N`` float32 buffers plus a few row blocks.

Conventions (shared with ``FastAP.m``):

* a distance exactly on a centre ``Z_k`` counts in the left half of the kink (derivative
  ``+1/Delta`` for bin ``k``), as ``dSoftBinning`` does;
* a bin with empty cumulative histogram (``H = 0``) contributes 0 to AP; in ``"matlab"``
  mode its ``d_AP_h_pos`` is 0 too (``FastAP.m``'s ``0/0`` turns the entry NaN, then 0),
  in ``"exact"`` mode it keeps the true derivative (it only matters for distances exactly
  on a centre);
* queries without positives are left out of the mean; when no query has a positive the loss
  is 0 with a zero gradient (the layer's ``objective`` is then the empty sum 0 and its
  backward returns zeros), never NaN.

Gradient modes (``gradient=``):

* ``"exact"``: the true gradient of the returned ``1 - mean AP`` (entries whose raw
  ``2 - 2 x_i.x_j`` is negative are clamped by the ``max(0, .)`` and get no gradient).
* ``"matlab"``: what ``FastAP.m``'s backward returns, i.e. ``dInputs = -0.5 * d(objective)/dX``
  with ``objective`` the *sum* of AP over queries with positives, and no masking of the
  clamp (the layer ignores it). It equals ``(Q / 2) * exact`` where no distance is clamped,
  ``Q`` the number of queries with positives. MatConvNet's backward ignores ``dOutputs``
  (a loss is always called with 1); here it is multiplied by the upstream gradient like any
  autograd function, so ``loss.backward()`` gives exactly MATLAB's ``dInputs`` (transposed
  to ``N x D``) and ``(w * loss).backward()`` gives ``w`` times it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from reproduce.errors import InputError

__all__ = ["FastAPLoss", "fastap_loss", "raw_dist2"]

GRADIENT_MODES = ("exact", "matlab")
_CHUNK_ELEMENTS = 1 << 20  # pairs per row block of the elementwise work (4 MiB of float32)


def raw_dist2(embeddings: Tensor, scale: float = 1.0, others: Tensor | None = None) -> Tensor:
    """``(2 - 2 X Y^T) * scale`` (``Y = others``, default ``X``), before the ``max(0, .)``
    clamp, for ``N x D`` embeddings."""
    others = embeddings if others is None else others
    const = torch.full((), 2.0 * scale, dtype=embeddings.dtype, device=embeddings.device)
    return torch.addmm(const, embeddings, others.T, beta=1.0, alpha=-2.0 * scale)


def _positives_per_query(labels: Tensor) -> Tensor:
    """``N_pos``: how many other samples share each sample's label."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse] - 1


def _bin_columns(t: Tensor, labels_rows: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Each pair's lower-bin column in the interleaved histogram table, and its upper weight.

    ``t = dist2 / Delta`` (clamped to ``[0, L + 1]``) is overwritten by the weight. A
    distance in ``(Z_k, Z_k+1]`` has lower bin ``k = ceil(t) - 1`` (a distance on a centre
    belongs to the interval on its left, as in ``dSoftBinning``) and puts weight
    ``frac = t - k`` in bin ``k + 1``, ``1 - frac`` in bin ``k``. The table interleaves the
    positive and negative histograms: bin ``b`` of a positive pair is column ``2 (b + 1)``, of
    a negative pair ``2 (b + 1) + 1`` (bin -1 and the bins past ``Z = 4`` are phantom columns),
    so a pair's upper bin is its column plus 2.
    """
    col = torch.ceil(t)  # = k + 1, in [0, L + 1]
    frac = t.sub_(col).add_(1.0)
    negative = labels_rows[:, None] != labels[None, :]
    torch.add(negative, col, alpha=2, out=col)  # 2 (k + 1) + [negative pair], one pass
    return col.to(torch.long), frac


def _row_blocks(N: int) -> list[tuple[int, int]]:
    """Row ranges of about ``_CHUNK_ELEMENTS`` pairs each: the O(N^2) elementwise work runs
    chunk by chunk so that its temporaries stay small and in cache."""
    rows = max(1, _CHUNK_ELEMENTS // max(N, 1))
    return [(r0, min(N, r0 + rows)) for r0 in range(0, N, rows)]


def _symmetrise_(G: Tensor, block: int = 256) -> Tensor:
    """``G <- G + G^T`` in place, tile pair by tile pair (both tiles stay in cache; a plain
    ``G + G.T`` reads the transpose with a stride of N and needs a second N x N buffer)."""
    N = G.shape[0]
    for i in range(0, N, block):
        for j in range(i, N, block):
            upper = G[i:i + block, j:j + block]
            lower = G[j:j + block, i:i + block]
            tile = upper + lower.T
            upper.copy_(tile)
            if j != i:
                lower.copy_(tile.T)
    return G


def _histogram_terms(h_pos: Tensor, h_neg: Tensor, N_pos: Tensor, *, matlab: bool
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-query AP and its gradients w.r.t. ``h_pos`` and ``h_neg`` (``FastAP.m`` formulas).

    Returns ``AP`` (N, NaN-free; 0 where ``N_pos = 0``), ``d_AP_h_pos``, ``d_AP_h_neg``
    (``N x L``) and the boolean mask of queries with positives. ``matlab``: like
    ``FastAP.m``, ``d_AP_h_pos`` is 0 in the leading bins where ``H = 0`` (there the layer's
    ``0/0`` turns the whole entry NaN, then 0); otherwise it is the true derivative, which
    keeps the later bins' dependence on that bin.
    """
    zero = torch.zeros((), dtype=h_pos.dtype, device=h_pos.device)
    H_pos = torch.cumsum(h_pos, dim=1)
    H = torch.cumsum(h_pos + h_neg, dim=1)
    H_neg = H - H_pos
    nonempty = H > 0
    H_safe = torch.where(nonempty, H, torch.ones_like(H))
    valid = N_pos > 0
    inv_N_pos = torch.where(valid, 1.0 / N_pos.clamp_min(1).to(h_pos.dtype), zero)[:, None]
    AP = torch.where(nonempty, h_pos * H_pos / H_safe, zero).sum(dim=1) * inv_N_pos[:, 0]
    H2 = H_safe * H_safe
    tmp1 = torch.where(nonempty, h_pos * H_neg / H2, zero)
    tmp2 = torch.where(nonempty, -h_pos * H_pos / H2, zero)
    suffix1 = torch.flip(torch.cumsum(torch.flip(tmp1, (1,)), dim=1), (1,)) - tmp1
    suffix2 = torch.flip(torch.cumsum(torch.flip(tmp2, (1,)), dim=1), (1,))
    own = torch.where(nonempty, (H_pos * H + h_pos * H_neg) / H2, zero)
    d_AP_h_pos = own + suffix1
    if matlab:
        d_AP_h_pos = torch.where(nonempty, d_AP_h_pos, zero)
    d_AP_h_pos = d_AP_h_pos * inv_N_pos
    d_AP_h_neg = suffix2 * inv_N_pos
    return AP, d_AP_h_pos, d_AP_h_neg, valid


class _FastAPFunction(torch.autograd.Function):
    """Forward: ``1 - mean AP``; backward: exact or MATLAB gradient (see module doc)."""

    @staticmethod
    def forward(ctx: Any, X: Tensor, labels: Tensor, num_bins: int, gradient: str) -> Tensor:
        N = X.shape[0]
        L = num_bins + 1
        Lp = L + 3
        Delta = 4.0 / num_bins
        # Each pair's lower-bin column is kept for the backward in one byte (two for more than
        # 125 bins). Pairs without gradient (a sample with itself; with the exact gradient,
        # pairs clamped by max(0, .)) point at `dead`, the column of the first phantom bin
        # past Z = 4, whose two histogram-gradient columns are both zero.
        dead = 2 * (L + 1)
        idx_store = torch.empty(N, N, dtype=torch.uint8 if 2 * Lp <= 256 else torch.int16,
                                device=X.device)
        hist = torch.zeros(N, 2 * Lp, dtype=X.dtype, device=X.device)
        for r0, r1 in _row_blocks(N):
            t = raw_dist2(X[r0:r1], 1.0 / Delta, X)  # dist2 / Delta, before the clamp
            t[:, r0:r1].fill_diagonal_(0.0)  # a sample is not its own neighbour
            clamped = None
            if gradient == "exact" and bool(t.amin() < 0):
                clamped = t < 0  # max(0, .) is active: no gradient through these pairs
            t.clamp_(0.0, L + 1.0)  # past 4 + Delta every pulse is 0 anyway
            idx, frac = _bin_columns(t, labels[r0:r1], labels)
            del t
            frac[:, r0:r1].fill_diagonal_(0.0)
            hist[r0:r1, 2:].scatter_add_(1, idx, frac)  # upper bins (column + 2) get frac
            frac = torch.rsub(frac, 1.0)
            frac[:, r0:r1].fill_diagonal_(0.0)
            hist[r0:r1].scatter_add_(1, idx, frac)  # lower bins get 1 - frac
            del frac
            if clamped is not None:
                idx.masked_fill_(clamped, dead)
            idx[:, r0:r1].fill_diagonal_(dead)
            idx_store[r0:r1] = idx
        N_pos = _positives_per_query(labels)
        h_pos = hist[:, 2:2 * L + 2:2]  # bins 0 .. L-1 of positive pairs
        h_neg = hist[:, 3:2 * L + 3:2]  # and of negative pairs
        AP, d_AP_h_pos, d_AP_h_neg, valid = _histogram_terms(h_pos, h_neg, N_pos,
                                                               matlab=gradient == "matlab")
        Q = int(valid.sum())
        loss = 1.0 - AP.sum() / Q if Q > 0 else AP.sum() * 0.0
        ctx.save_for_backward(X, idx_store, d_AP_h_pos, d_AP_h_neg)
        ctx.Q = Q
        ctx.opts = (num_bins, gradient)
        return loss.to(X.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        X, idx_store, d_AP_h_pos, d_AP_h_neg = ctx.saved_tensors
        num_bins, gradient = ctx.opts
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if ctx.Q == 0:
            return torch.zeros_like(X), None, None, None
        N = X.shape[0]
        L = num_bins + 1
        Lp = L + 3
        Delta = 4.0 / num_bins
        # d loss / d X = coef * (G + G^T) X with G_ij = d obj / d dist2_ij (row i's histogram):
        # exact: loss = 1 - obj / Q and d dist2 / dx = -2x, so coef = 2 / Q;
        # matlab: dInputs = -0.5 * d obj / dX, so coef = 1.
        coef = (2.0 / ctx.Q if gradient == "exact" else 1.0) / Delta
        table = torch.zeros(N, 2 * Lp, dtype=X.dtype, device=X.device)
        table[:, 2:2 * L + 2:2] = d_AP_h_pos
        table[:, 3:2 * L + 3:2] = d_AP_h_neg
        table.mul_(grad_out.to(X.dtype) * coef)
        # upper bin +1/Delta, lower bin -1/Delta: one gather from the column differences
        steps = table[:, 2:] - table[:, :-2]
        G = torch.empty(N, N, dtype=X.dtype, device=X.device)
        for r0, r1 in _row_blocks(N):
            torch.gather(steps[r0:r1], 1, idx_store[r0:r1].long(), out=G[r0:r1])
        return _symmetrise_(G) @ X, None, None, None


def fastap_loss(embeddings: Tensor, labels: Tensor, num_bins: int = 10,
                gradient: str = "exact") -> Tensor:
    """Functional form of :class:`FastAPLoss`: ``1 - mean AP`` over queries with positives."""
    if gradient not in GRADIENT_MODES:
        raise InputError(f"FastAPLoss: gradient must be one of {GRADIENT_MODES}, "
                         f"got {gradient!r}")
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 1:
        raise InputError(f"FastAPLoss: num_bins must be a positive integer, got {num_bins!r}")
    if embeddings.dim() != 2:
        raise InputError(f"FastAPLoss: embeddings must be N x D, got shape "
                         f"{tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise InputError(f"FastAPLoss: labels must be a vector of {embeddings.shape[0]} "
                         f"entries, got shape {tuple(labels.shape)}")
    if not embeddings.is_floating_point():
        raise InputError(f"FastAPLoss: embeddings must be floating point, got {embeddings.dtype}")
    if embeddings.shape[0] < 2:
        return embeddings.sum() * 0.0
    return _FastAPFunction.apply(embeddings, labels.to(embeddings.device), int(num_bins),
                                 gradient)


class FastAPLoss(nn.Module):
    """FastAP loss (Cakir et al., CVPR 2019) with ``FastAP.m``'s binning, as an ``nn.Module``.

    ``forward(embeddings N x D, labels N)`` returns the scalar ``1 - mean AP`` over queries
    that have at least one positive (0 if none). Embeddings are expected L2-normalised, as
    the authors' network does; other inputs are accepted and treated as ``FastAP.m`` treats
    them (distance clamped at 0, distances past ``4 + Delta`` fall outside every bin).
    Works on any device and floating dtype; computes in the embeddings' dtype.
    """

    def __init__(self, num_bins: int = 10, gradient: str = "exact") -> None:
        super().__init__()
        if gradient not in GRADIENT_MODES:
            raise InputError(f"FastAPLoss: gradient must be one of {GRADIENT_MODES}, "
                             f"got {gradient!r}")
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 1:
            raise InputError(f"FastAPLoss: num_bins must be a positive integer, "
                             f"got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.gradient = gradient

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``1 - mean AP`` of the batch (a 0-d tensor in the embeddings' dtype)."""
        return fastap_loss(embeddings, labels, self.num_bins, self.gradient)

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, gradient={self.gradient!r}"
