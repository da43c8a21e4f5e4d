"""Stage-by-stage reproduction of the authors' MatConvNet layer ``FastAP.m``.

This module is the *reference*, not the fast loss: it follows ``FastAP.m`` statement by
statement, keeps its variable names and MATLAB shapes (``X`` is ``D x N``, columns are
samples; histograms are ``N x L`` with ``L = nbins + 1``), and returns every intermediate
so that each one can be held next to a value MATLAB saved. It is dense on purpose (a loop
over bins with ``N x N`` pulses); :mod:`reproduce.loss.fastap_loss` is the fast version.

Precision (``matlab_precision=True``) follows MATLAB's class rules as the fixtures record
them (``reproduce/parity/fixtures/fastap_matlab/README.md``):

* single ``X``: ``dist2`` and the pulses are single (a double scalar meeting a single
  array is converted to single first); ``sum(pulse .* I_pos, 2)`` accumulates in single,
  column after column (Octave's reduction order, reproduced here), and is stored into the
  preallocated double ``h_pos``; everything from the histograms to ``d_AP_h_neg`` is
  double; ``X * (Ap + An)`` is a single product (the double factor is converted to single)
  accumulated into a single ``d_AP_x``; ``dInputs = -single(d_AP_x)``.
* double ``X``: everything double, ``dInputs`` single.

With ``matlab_precision=False`` every stage computes in ``X``'s dtype with torch's own
reductions.

Two deliberate choices the layer leaves open:

* ``Z`` is ``linspace(0, 4, nbins+1)``; MATLAB, Octave and torch may differ in the last bit
  of some centres. Pass ``Z`` (e.g. the one a fixture saved) to remove that difference.
* ``dSoftBinning`` compares a (possibly single) distance with the double thresholds
  ``mid - delta``, ``mid`` and ``mid + delta``; the comparison is done exactly, in double.
"""

from __future__ import annotations

import torch
from torch import Tensor

_GROUP_ELEMENTS = 2 ** 24  # at most this many pulse values in memory at once

__all__ = [
    "affinity",
    "bin_centres",
    "d_soft_binning",
    "fastap_from_histograms",
    "fastap_matlab_forward_backward",
    "histogram_gradients",
    "input_gradient",
    "pairwise_dist2",
    "soft_binning",
    "soft_histograms",
]


def bin_centres(nbins: int, *, device: torch.device | str | None = None) -> tuple[Tensor, float]:
    """``Z = linspace(0, 4, nbins+1)`` (double, ``1 x L`` flattened to ``L``) and ``Delta``."""
    if int(nbins) != nbins or nbins < 1:
        raise ValueError(f"FastAP: nbins must be a positive integer, got {nbins!r}")
    nbins = int(nbins)
    Z = torch.linspace(0.0, 4.0, nbins + 1, dtype=torch.float64, device=device)
    return Z, 4.0 / nbins


def affinity(Y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``I_pos``, ``I_neg`` (``N x N`` double 0/1, diagonal 0) and ``N_pos`` (``N x 1``).

    ``Y`` is the ``N x k`` label matrix (column 1 is the class) or a label vector.
    """
    labels = Y[:, 0] if Y.dim() == 2 else Y
    if labels.dim() != 1:
        raise ValueError(f"FastAP: labels must be N or N x k, got shape {tuple(Y.shape)}")
    N = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    off_diag = ~torch.eye(N, dtype=torch.bool, device=labels.device)
    I_pos = (same & off_diag).to(torch.float64)
    I_neg = (~same & off_diag).to(torch.float64)
    N_pos = I_pos.sum(dim=1, keepdim=True)
    return I_pos, I_neg, N_pos


def pairwise_dist2(X: Tensor) -> Tensor:
    """``dist2 = max(0, 2 - 2 * X' * X)`` in ``X``'s dtype (``X`` is ``D x N``)."""
    return torch.clamp_min(2.0 - 2.0 * (X.T @ X), 0.0)


def _scalar(value: float | Tensor, like: Tensor) -> Tensor:
    """A 0-d tensor of ``like``'s dtype: MATLAB's conversion of a double scalar to the
    array's class before single arithmetic (tensor-tensor ops, so no reciprocal tricks)."""
    return torch.as_tensor(value, dtype=torch.float64, device=like.device).to(like.dtype)


def soft_binning(dist2: Tensor, mid: float | Tensor, delta: float) -> Tensor:
    """``softBinning``: ``max(0, 1 - abs(D - mid) / delta)`` in ``dist2``'s dtype."""
    return torch.clamp_min(1.0 - (dist2 - _scalar(mid, dist2)).abs() / _scalar(delta, dist2), 0.0)


def d_soft_binning(dist2: Tensor, mid: float | Tensor, delta: float) -> Tensor:
    """``dSoftBinning``: ``+1/delta`` on ``(mid-delta, mid]``, ``-1/delta`` on
    ``(mid, mid+delta]``, 0 elsewhere; double, thresholds compared exactly in double."""
    D = dist2.to(torch.float64)
    mid = float(mid)
    ind1 = (D > mid - delta) & (D <= mid)  # noqa: SIM300 (MATLAB's order)
    ind2 = (D > mid) & (D <= mid + delta)  # noqa: SIM300
    return (ind1.to(torch.float64) - ind2.to(torch.float64)) / delta


def _row_sum_sequential(A: Tensor) -> Tensor:
    """``sum(A, 2)`` accumulated column by column in ``A``'s dtype (Octave's order)."""
    acc = torch.zeros(A.shape[:-1], dtype=A.dtype, device=A.device)
    for j in range(A.shape[-1]):
        acc = acc + A[..., j]
    return acc


def soft_histograms(dist2: Tensor, I_pos: Tensor, I_neg: Tensor, Z: Tensor, Delta: float,
                    *, matlab_precision: bool = True) -> tuple[Tensor, Tensor]:
    """``h_pos``, ``h_neg`` (``N x L``): the loop over bins of ``FastAP.m``'s forward.

    MATLAB precision: pulses in ``dist2``'s class, row sums accumulated in that class in
    Octave's order, stored as double. Otherwise: torch sums in ``dist2``'s dtype.
    """
    out_dtype = torch.float64 if matlab_precision else dist2.dtype
    N = dist2.shape[0]
    group = max(1, _GROUP_ELEMENTS // max(1, 2 * N * N))  # bins handled at once
    mask_pos, mask_neg = I_pos.to(dist2.dtype), I_neg.to(dist2.dtype)
    parts = []
    for first in range(0, Z.numel(), group):
        pulses = torch.stack([soft_binning(dist2, mid, Delta) for mid in Z[first:first + group]])
        # pulse .* I_pos for several bins at once, then Octave's summation order (or torch's)
        masked = torch.stack([pulses * mask_pos, pulses * mask_neg])
        parts.append(_row_sum_sequential(masked) if matlab_precision else masked.sum(dim=-1))
    h_pos, h_neg = torch.cat(parts, dim=1).to(out_dtype).transpose(1, 2)  # (2, L, N) -> N x L
    return h_pos, h_neg


def _zero_nonfinite(A: Tensor) -> Tensor:
    """``A(isnan(A)|isinf(A)) = 0``."""
    return torch.where(torch.isfinite(A), A, torch.zeros((), dtype=A.dtype, device=A.device))


def fastap_from_histograms(h_pos: Tensor, h_neg: Tensor, N_pos: Tensor) -> dict[str, Tensor]:
    """Cumulative histograms, per-bin and per-query AP, ``objective`` and ``average``.

    ``FastAP_query`` is ``N x 1`` and NaN where ``N_pos = 0`` (as MATLAB saved it);
    ``objective`` is the sum over the other queries (0 when none), ``average`` their mean
    (NaN when none).
    """
    H_pos = torch.cumsum(h_pos, dim=1)
    h = h_pos + h_neg
    H = torch.cumsum(h, dim=1)
    FastAP_bins = _zero_nonfinite(h_pos * H_pos / H)
    FastAP_query = FastAP_bins.sum(dim=1, keepdim=True) / N_pos.to(FastAP_bins.dtype)
    kept = FastAP_query[~torch.isnan(FastAP_query)]
    objective = kept.sum()
    average = kept.mean() if kept.numel() else torch.full((), float("nan"), dtype=kept.dtype,
                                                           device=kept.device)
    return {"H_pos": H_pos, "h": h, "H": H, "FastAP_bins": FastAP_bins,
            "FastAP_query": FastAP_query, "objective": objective, "average": average}


def histogram_gradients(h_pos: Tensor, H_pos: Tensor, H: Tensor, N_pos: Tensor
                        ) -> dict[str, Tensor]:
    """Steps 1-2 of the backward: ``H_neg``, ``d_AP_h_pos``, ``d_AP_h_neg`` (``N x L``).

    Literal: ``tmp1 * triu(ones(L), 1)'`` and ``tmp2 * triu(ones(L))'`` as matrix
    products, NaN (and, for ``d_AP_*``, Inf) set to 0.
    """
    L = h_pos.shape[1]
    ones = torch.ones(L, L, dtype=H.dtype, device=H.device)
    H_neg = H - H_pos
    H2 = H ** 2
    tmp1 = h_pos * H_neg / H2
    tmp1 = torch.where(torch.isnan(tmp1), torch.zeros_like(tmp1), tmp1)
    d_AP_h_pos = (H_pos * H + h_pos * H_neg) / H2
    d_AP_h_pos = d_AP_h_pos + tmp1 @ torch.triu(ones, 1).T
    d_AP_h_pos = _zero_nonfinite(d_AP_h_pos / N_pos.to(H.dtype))
    tmp2 = -h_pos * H_pos / H2
    tmp2 = torch.where(torch.isnan(tmp2), torch.zeros_like(tmp2), tmp2)
    d_AP_h_neg = _zero_nonfinite((tmp2 @ torch.triu(ones).T) / N_pos.to(H.dtype))
    return {"H_neg": H_neg, "d_AP_h_pos": d_AP_h_pos, "d_AP_h_neg": d_AP_h_neg}


def input_gradient(X: Tensor, dist2: Tensor, I_pos: Tensor, I_neg: Tensor, Z: Tensor,
                   Delta: float, d_AP_h_pos: Tensor, d_AP_h_neg: Tensor,
                   *, matlab_precision: bool = True) -> dict[str, Tensor]:
    """Step 3 of the backward: ``d_AP_x`` (``D x N``) and ``dInputs`` (``1 x 1 x D x N``).

    For each bin: ``Ap = ddp * diag(a_p) + diag(a_p) * ddp`` (and ``An``), then
    ``d_AP_x = d_AP_x - X * (Ap + An)``. MATLAB precision: the product and the accumulator
    are in ``X``'s class; ``dInputs`` is ``-single(d_AP_x)``. Otherwise ``dInputs`` keeps
    ``X``'s dtype.
    """
    d_AP_x = torch.zeros_like(X)
    for l in range(Z.numel()):  # noqa: E741 (MATLAB's loop variable)
        dpulse = _zero_nonfinite(d_soft_binning(dist2, Z[l], Delta))
        ddp = dpulse * I_pos
        ddn = dpulse * I_neg
        a_p = d_AP_h_pos[:, l].to(torch.float64)
        a_n = d_AP_h_neg[:, l].to(torch.float64)
        Ap = ddp * a_p[None, :] + a_p[:, None] * ddp
        An = ddn * a_n[None, :] + a_n[:, None] * ddn
        d_AP_x = d_AP_x - X @ (Ap + An).to(X.dtype)
    out_dtype = torch.float32 if matlab_precision else X.dtype
    dInputs = (-d_AP_x).to(out_dtype).reshape(1, 1, *X.shape)
    return {"d_AP_x": d_AP_x, "dInputs": dInputs}


def fastap_matlab_forward_backward(X: Tensor, Y: Tensor, nbins: int, *,
                                   matlab_precision: bool = True,
                                   Z: Tensor | None = None) -> dict[str, Tensor]:
    """One ``forward`` + ``backward`` of ``FastAP.m``; every intermediate by MATLAB name.

    ``X``: ``D x N`` features (``squeeze(inputs{1})``); ``Y``: ``N x k`` labels (or ``N``).
    ``Z`` overrides the bin centres (default ``linspace(0, 4, nbins+1)``). Returns ``Z``,
    ``Delta``, ``dist2``, ``I_pos``, ``I_neg``, ``N_pos``, ``h_pos``, ``h_neg``, ``H_pos``,
    ``h``, ``H``, ``FastAP_bins``, ``FastAP_query``, ``objective``, ``average``, ``H_neg``,
    ``d_AP_h_pos``, ``d_AP_h_neg``, ``d_AP_x``, ``dInputs``.
    """
    if X.dim() != 2:
        raise ValueError(f"FastAP: X must be D x N, got shape {tuple(X.shape)}")
    if Y.shape[0] != X.shape[1]:
        raise ValueError(f"FastAP: {X.shape[1]} samples in X but {Y.shape[0]} label rows in Y")
    Z_default, Delta = bin_centres(nbins, device=X.device)
    Z = Z_default if Z is None else Z.reshape(-1).to(torch.float64)
    I_pos, I_neg, N_pos = affinity(Y)
    dist2 = pairwise_dist2(X)
    h_pos, h_neg = soft_histograms(dist2, I_pos, I_neg, Z, Delta,
                                   matlab_precision=matlab_precision)
    out: dict[str, Tensor] = {
        "Z": Z, "Delta": torch.tensor(Delta, dtype=torch.float64), "dist2": dist2,
        "I_pos": I_pos, "I_neg": I_neg, "N_pos": N_pos, "h_pos": h_pos, "h_neg": h_neg,
    }
    out.update(fastap_from_histograms(h_pos, h_neg, N_pos))
    out.update(histogram_gradients(h_pos, out["H_pos"], out["H"], N_pos))
    out.update(input_gradient(X, dist2, I_pos, I_neg, Z, Delta, out["d_AP_h_pos"],
                              out["d_AP_h_neg"], matlab_precision=matlab_precision))
    return out
