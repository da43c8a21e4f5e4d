"""Parity of the PyTorch FastAP port with values saved from the MATLAB layer.

A FastAP fixture is a MAT file holding one call of ``FastAP.m`` (format:
``reproduce/parity/fixtures/fastap_matlab/README.md``): at least ``X`` (``D x N``), ``Y`` and
``nbins``, plus any of the saved intermediates. Every saved quantity is checked *stage by
stage*: each stage of :mod:`reproduce.loss.fastap_matlab` is fed MATLAB's own saved inputs to
that stage (its ``dist2`` for the histograms, its histograms for AP and the histogram
gradients, its ``d_AP_h_*`` for ``d_AP_x``), so every row isolates one stage's arithmetic
and can use that stage's rounding bound as tolerance. Then :class:`~reproduce.loss.fastap_loss.
FastAPLoss` runs end to end from ``X`` alone: ``1 - loss`` against ``average`` and its
``"matlab"`` gradient against ``dInputs`` (``-d_AP_x`` in double cases).

Errors are reported as the largest absolute difference and that difference relative to the
largest magnitude of the MATLAB quantity. Tolerances (``u`` is the unit roundoff of ``X``'s
class: ``2^-24`` single, ``2^-53`` double; ``g(n) = n u / (1 - n u)``):

* ``Z``: 2 ulp of 4 (``linspace`` implementations differ in the last bit); the file's ``Z`` is
  used downstream. ``Delta``, ``I_pos``, ``I_neg``, ``N_pos``: identical.
* ``dist2``: entrywise ``2 (2 g(D) |x_i|.|x_j| + u |dist2|)``, twice the rounding bound of a
  length-``D`` dot product in any order.
* ``h_pos``, ``h_neg``: entrywise ``(2 g(N) + 4 u) h``: a sum of ``N - 1`` non-negative pulses
  in any order, pulses a few roundings apart.
* ``H_pos`` ... ``average``, ``H_neg``, ``d_AP_h_pos``, ``d_AP_h_neg``, ``computeGrad_obj``:
  relative ``1e-12`` (double arithmetic on double histograms in every case).
* ``d_AP_x``, ``dInputs``, ``computeGrad_grad``: entrywise ``2 g(N + L + 1) (|X| M)`` with
  ``M_ij = (2 / Delta)(a_i + a_j)``, ``a_i`` the largest ``|d_AP_h_*|`` of query ``i``: the
  rounding bound of ``L`` accumulated length-``N`` products, on the magnitudes summed;
  ``dInputs`` adds one single rounding.
* ``FastAPLoss.average``: relative ``4 g(D + N)`` (the two reductions of the fast loss, in
  the numerator and denominator of AP); no query with positives: the loss must be exactly 0.
* ``FastAPLoss.dInputs``: entrywise ``4 g(D + N + L) (|X| M)`` plus, for pairs whose distance
  lies within rounding (4 ulp of 4) of a bin edge (a kink of the triangular pulses, where
  the gradient jumps), the size of that jump: ``(|g_k-1| + 2|g_k| + |g_k+1|) / Delta``
  times ``|x_j|``. Such pairs are counted and reported in the row's note, never dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reproduce.errors import InputError
from reproduce.loss import fastap_matlab as fm
from reproduce.loss.fastap_loss import FastAPLoss, raw_dist2
from reproduce.parity.fixture_file import fixture_text, load_fixture
from reproduce.parity.row import ParityRow, error_ratio, flag_ratio

log = logging.getLogger(__name__)

__all__ = ["FASTAP_REQUIRED", "check_fastap_fixture", "is_fastap_fixture"]

FASTAP_REQUIRED = ("X", "Y", "nbins")
REL_DOUBLE = 1e-12


def is_fastap_fixture(mat: dict[str, Any]) -> bool:
    """Whether a loaded MAT dict (``scipy.io.loadmat``) is a saved ``FastAP.m`` call."""
    return all(name in mat for name in FASTAP_REQUIRED)


def _gamma(n: int, u: float) -> float:
    """Higham's ``g(n) = n u / (1 - n u)``: the worst-case relative error of an n-term sum."""
    return n * u / (1.0 - n * u)


def _row(case: str, quantity: str, ours: Tensor, theirs: np.ndarray, *,
         rel: float | None = None, allowed: Tensor | None = None, tolerance: str,
         note: str = "") -> ParityRow:
    """Compare ``ours`` with MATLAB's ``theirs``: against ``rel`` times the largest MATLAB
    magnitude, or against an entrywise ``allowed`` bound. NaNs must sit at the same places."""
    a = ours.detach().to("cpu", torch.float64).numpy()
    b = np.asarray(theirs, dtype=np.float64)
    if a.size != b.size:
        return ParityRow(case, quantity, float("inf"), float("inf"), tolerance, "fail",
                         f"shape {tuple(a.shape)} vs MATLAB {b.shape}", float("inf"))
    a = a.reshape(b.shape)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return ParityRow(case, quantity, float("inf"), float("inf"), tolerance, "fail",
                         f"NaN at {int(np.count_nonzero(nan_a != nan_b))} differing entries",
                         float("inf"))
    both = ~nan_b
    diff = np.abs(a[both] - b[both])
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b[both]).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if allowed is not None:
        bound = allowed.detach().to("cpu", torch.float64).numpy().reshape(b.shape)[both]
        over = diff > bound
        passed = not bool(over.any())
        if not passed:
            extra = f"{int(over.sum())} of {diff.size} entries over their bound"
            note = f"{note}; {extra}" if note else extra
        ratio = error_ratio(diff, bound)
    else:
        passed = max_abs <= (rel or 0.0) * scale
        ratio = error_ratio(max_abs, (rel or 0.0) * scale)
    return ParityRow(case, quantity, max_abs, max_rel, tolerance, "pass" if passed else "fail",
                     note, ratio)


def _tensor(mat: dict[str, Any], name: str) -> Tensor:
    """A saved numeric field as a tensor (MATLAB shape, native byte order)."""
    value = np.asarray(mat[name])
    if value.dtype.kind not in "fiub":
        raise InputError(f"field {name} must be numeric, got {value.dtype}")
    return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("=")))


def _magnitudes(X: Tensor, d_AP_h_pos: Tensor, d_AP_h_neg: Tensor, Delta: float) -> Tensor:
    """``|X| M`` (``D x N``): the magnitude of the terms summed into ``d_AP_x``."""
    a = torch.maximum(d_AP_h_pos.abs().amax(dim=1), d_AP_h_neg.abs().amax(dim=1))
    M = (2.0 / Delta) * (a[:, None] + a[None, :])
    M.fill_diagonal_(0.0)
    return X.abs().to(torch.float64) @ M


def _edge_jump_bound(X: Tensor, d_ours: Tensor, d_theirs: Tensor, I_pos: Tensor,
                     Z: Tensor, Delta: float, d_AP_h_pos: Tensor, d_AP_h_neg: Tensor,
                     tau: float) -> tuple[Tensor, int, Tensor]:
    """Bound (``D x N``) on the gradient change caused by pairs on either side of a bin edge.

    A pair is *near an edge* when some kink ``e`` of the pulses (the centres ``Z`` and
    ``4 + Delta``) lies within ``tau`` of the interval between our distance and MATLAB's.
    Returns the bound, the number of such pairs (i < j counted once) and the mask of samples
    they touch.
    """
    L = Z.numel()
    edges = torch.cat([Z, Z[-1:] + Delta])
    lo = torch.minimum(d_ours, d_theirs).to(torch.float64) - tau
    hi = torch.maximum(d_ours, d_theirs).to(torch.float64) + tau
    N = d_ours.shape[0]
    jump = torch.zeros(N, N, dtype=torch.float64)
    near_any = torch.zeros(N, N, dtype=torch.bool)
    pad = torch.zeros(N, 1, dtype=torch.float64)
    g_pos = torch.cat([pad, d_AP_h_pos.abs(), pad, pad], dim=1)  # columns: bin -1 .. L
    g_neg = torch.cat([pad, d_AP_h_neg.abs(), pad, pad], dim=1)
    pos = I_pos > 0
    for k in range(L + 1):
        near = (lo <= edges[k]) & (edges[k] <= hi)
        near.fill_diagonal_(False)
        if not bool(near.any()):
            continue
        near_any |= near
        size_pos = (g_pos[:, k] + 2 * g_pos[:, k + 1] + g_pos[:, k + 2]) / Delta
        size_neg = (g_neg[:, k] + 2 * g_neg[:, k + 1] + g_neg[:, k + 2]) / Delta
        jump += near * torch.where(pos, size_pos[:, None], size_neg[:, None])
    bound = X.abs().to(torch.float64) @ (jump + jump.T)
    touched = near_any.any(dim=1) | near_any.any(dim=0)
    return bound, int(torch.triu(near_any | near_any.T, 1).sum()), touched


def check_fastap_fixture(path: Path, mat: dict[str, Any] | None = None) -> list[ParityRow]:
    """Check one saved ``FastAP.m`` call: every saved quantity, then ``FastAPLoss``.

    ``mat`` is the file's variables when the caller has already read them.
    """
    path = Path(path)
    mat = load_fixture(path) if mat is None else mat
    if not is_fastap_fixture(mat):
        missing = [f for f in FASTAP_REQUIRED if f not in mat]
        raise InputError(f"{path}: not a FastAP fixture, missing fields {missing}")
    case = fixture_text(mat.get("case_name", "")) or path.stem
    X = _tensor(mat, "X")
    if X.dim() > 2 and all(n == 1 for n in X.shape[:-2]):
        X = X.reshape(X.shape[-2:])  # inputs{1} saved unsqueezed (1 x 1 x D x N)
    if X.dim() != 2 or not X.is_floating_point():
        raise InputError(f"{path}: field X must be a D x N single or double matrix, "
                         f"got {tuple(X.shape)} {X.dtype}")
    Y = _tensor(mat, "Y")
    if Y.dim() == 1:
        Y = Y[:, None]
    if Y.shape[0] != X.shape[1]:
        raise InputError(f"{path}: X has {X.shape[1]} columns but Y has {Y.shape[0]} rows")
    nbins_raw = float(np.asarray(mat["nbins"]).ravel()[0])
    if nbins_raw != int(nbins_raw) or nbins_raw < 1:
        raise InputError(f"{path}: field nbins must be a positive integer, got {nbins_raw}")
    nbins = int(nbins_raw)
    D, N = X.shape
    u = float(torch.finfo(X.dtype).eps) / 2
    u32 = float(torch.finfo(torch.float32).eps) / 2
    cls = "single" if X.dtype == torch.float32 else "double"
    rel_txt = f"rel {REL_DOUBLE:g}"
    rows: list[ParityRow] = []

    def saved(name: str, fallback: Tensor) -> Tensor:
        """MATLAB's saved input to a stage, or ours when the file lacks it."""
        return _tensor(mat, name).to(fallback.dtype) if name in mat else fallback

    def check(name: str, ours: Tensor, **kw: Any) -> None:
        if name in mat:
            rows.append(_row(case, name, ours, mat[name], **kw))

    # the forward, stage by stage
    Z_ours, Delta = fm.bin_centres(nbins)
    check("Z", Z_ours, rel=2 * float(np.finfo(np.float64).eps),  # 2 ulp(4) / max|Z|
          tolerance="abs 2 ulp(4)",
          note="linspace differs in the last bit; the file's Z is used downstream"
          if "Z" in mat and not np.array_equal(Z_ours.numpy(), mat["Z"].ravel()) else "")
    Z = saved("Z", Z_ours).reshape(-1).to(torch.float64)
    check("Delta", torch.tensor(Delta, dtype=torch.float64), rel=0.0, tolerance="identical")
    I_pos, I_neg, N_pos = fm.affinity(Y)
    for name, ours in (("I_pos", I_pos), ("I_neg", I_neg), ("N_pos", N_pos)):
        check(name, ours, rel=0.0, tolerance="identical")
    dist2 = fm.pairwise_dist2(X)
    norms = X.abs().to(torch.float64).T @ X.abs().to(torch.float64)
    check("dist2", dist2, allowed=2 * (2 * _gamma(D, u) * norms + u * dist2.abs().double()),
          tolerance=f"entrywise 2(2g(D)|x_i||x_j| + u|dist2|), D={D}, {cls}")
    dist2_m = saved("dist2", dist2)
    I_pos_m, I_neg_m, N_pos_m = (saved("I_pos", I_pos).double(), saved("I_neg", I_neg).double(),
                                 saved("N_pos", N_pos).double())
    h_pos, h_neg = fm.soft_histograms(dist2_m, I_pos_m, I_neg_m, Z, Delta)
    g_N = 2 * _gamma(N, u) + 4 * u
    for name, ours in (("h_pos", h_pos), ("h_neg", h_neg)):
        theirs = saved(name, ours)
        check(name, ours, allowed=g_N * theirs.abs() + 1e-300,
              tolerance=f"entrywise (2g(N)+4u)|h|, N={N}, {cls}")
    h_pos_m, h_neg_m = saved("h_pos", h_pos), saved("h_neg", h_neg)
    fwd = fm.fastap_from_histograms(h_pos_m, h_neg_m, N_pos_m)
    for name in ("H_pos", "h", "H", "FastAP_bins", "FastAP_query", "objective", "average"):
        check(name, fwd[name], rel=REL_DOUBLE, tolerance=rel_txt)
    check("computeGrad_obj", fwd["average"], rel=REL_DOUBLE, tolerance=rel_txt)

    # the backward, stage by stage
    bwd = fm.histogram_gradients(h_pos_m, saved("H_pos", fwd["H_pos"]), saved("H", fwd["H"]),
                                 N_pos_m)
    for name in ("H_neg", "d_AP_h_pos", "d_AP_h_neg"):
        check(name, bwd[name], rel=REL_DOUBLE, tolerance=rel_txt)
    d_AP_h_pos_m = saved("d_AP_h_pos", bwd["d_AP_h_pos"])
    d_AP_h_neg_m = saved("d_AP_h_neg", bwd["d_AP_h_neg"])
    grad = fm.input_gradient(X, dist2_m, I_pos_m, I_neg_m, Z, Delta, d_AP_h_pos_m,
                             d_AP_h_neg_m)
    L = Z.numel()
    mag = _magnitudes(X, d_AP_h_pos_m, d_AP_h_neg_m, Delta)
    allowed_x = 2 * _gamma(N + L + 1, u) * mag
    grad_txt = f"entrywise 2g(N+L+1)|X|M, N={N}, L={L}, {cls}"
    check("d_AP_x", grad["d_AP_x"], allowed=allowed_x + 1e-300, tolerance=grad_txt)
    ours_dIn = grad["dInputs"].reshape(D, N)
    allowed_in = allowed_x + 2 * u32 * ours_dIn.abs().double() + 1e-300
    check("dInputs", ours_dIn, allowed=allowed_in, tolerance=grad_txt + " + 1 single rounding")
    check("computeGrad_grad", ours_dIn, allowed=allowed_in,
          tolerance=grad_txt + " + 1 single rounding")

    rows.extend(_check_fast_loss(case, mat, X, Y, nbins, Z, Delta, dist2_m, I_pos_m,
                                 d_AP_h_pos_m, d_AP_h_neg_m, mag))
    return rows


def _check_fast_loss(case: str, mat: dict[str, Any], X: Tensor, Y: Tensor, nbins: int,
                     Z: Tensor, Delta: float, dist2_m: Tensor, I_pos_m: Tensor,
                     d_AP_h_pos_m: Tensor, d_AP_h_neg_m: Tensor, mag: Tensor
                     ) -> list[ParityRow]:
    """``FastAPLoss`` end to end from ``X``: its ``1 - loss`` and its MATLAB-mode gradient."""
    D, N = X.shape
    L = Z.numel()
    u = float(torch.finfo(X.dtype).eps) / 2
    cls = "single" if X.dtype == torch.float32 else "double"
    emb = X.T.contiguous().requires_grad_(True)
    loss = FastAPLoss(nbins, gradient="matlab")(emb, Y[:, 0])
    loss.backward()
    loss = loss.detach()
    rows: list[ParityRow] = []
    if "average" in mat:
        average = float(np.asarray(mat["average"]).ravel()[0])
        if np.isnan(average):
            ok = float(loss) == 0.0
            rows.append(ParityRow(case, "FastAPLoss.average", abs(float(loss)), float("nan"),
                                  "loss exactly 0", "pass" if ok else "fail",
                                  f"no query has a positive (MATLAB average NaN): loss "
                                  f"{float(loss):g}", flag_ratio(ok)))
        else:
            rel = 4 * _gamma(D + N, u)
            rows.append(_row(case, "FastAPLoss.average", 1.0 - loss.detach().double(),
                             mat["average"], rel=rel,
                             tolerance=f"rel 4g(D+N) = {rel:.1e}, {cls}",
                             note="1 - FastAPLoss(X, Y) from X alone"))
    ref_name = "d_AP_x" if X.dtype == torch.float64 and "d_AP_x" in mat else "dInputs"
    if ref_name not in mat:
        return rows
    theirs = np.asarray(mat[ref_name], dtype=np.float64).reshape(D, N)
    if ref_name == "d_AP_x":
        theirs = -theirs
    ours = emb.grad.T
    # the fast loss bins t = (2 - 2 X X^T) / Delta, computed in one product
    d_ours = raw_dist2(X.T.contiguous(), 1.0 / Delta).clamp_min_(0.0) * Delta
    tau = 16 * float(torch.finfo(X.dtype).eps)  # 4 ulp of 4
    jump, n_pairs, touched = _edge_jump_bound(X, d_ours, dist2_m, I_pos_m, Z, Delta,
                                              d_AP_h_pos_m, d_AP_h_neg_m, tau)
    allowed = 4 * _gamma(D + N + L, u) * mag + jump + 1e-300
    if ref_name == "dInputs":
        allowed = allowed + 2 * 2 ** -24 * torch.from_numpy(np.abs(theirs))
    diff = (ours.double() - torch.from_numpy(theirs)).abs()
    note = (f"FastAPLoss(gradient='matlab') from X alone vs "
            f"{'-d_AP_x' if ref_name == 'd_AP_x' else 'dInputs'}")
    if n_pairs:
        on = diff[:, touched].max().item()
        off = diff[:, ~touched].max().item() if bool((~touched).any()) else 0.0
        note += (f"; {n_pairs} pair(s) within {tau:.1e} of a bin edge touch "
                 f"{int(touched.sum())} sample(s): bound widened there by the gradient's jump "
                 f"(max {jump.max().item():.2e}); max error on them {on:.2e}, elsewhere "
                 f"{off:.2e}")
    rows.append(_row(case, "FastAPLoss.dInputs", ours, theirs, allowed=allowed,
                     tolerance=f"entrywise 4g(D+N+L)|X|M + edge jumps, {cls}", note=note))
    return rows
