"""``FastAPLoss``: value and both gradient modes against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from torch.nn.functional import normalize

from reproduce import paths
from reproduce.errors import InputError
from reproduce.loss import fastap_matlab as fm
from reproduce.loss.fastap_loss import FastAPLoss, fastap_loss

FIXTURES = paths.FIXTURES / "fastap_matlab"
CASES = sorted(p.stem for p in FIXTURES.glob("*.mat"))


def dense_loss(X: torch.Tensor, y: torch.Tensor, nbins: int) -> torch.Tensor:
    """Textbook FastAP with an ``N x N x L`` pulse tensor, differentiated by autograd."""
    L = nbins + 1
    Delta = 4.0 / nbins
    Z = torch.linspace(0, 4, L, dtype=X.dtype)
    d = torch.clamp(2 - 2 * X @ X.T, min=0)
    pulses = torch.clamp(1 - (d[..., None] - Z).abs() / Delta, min=0)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    pos, neg = same & ~eye, ~same
    h_pos = (pulses * pos[..., None]).sum(1)
    h_neg = (pulses * neg[..., None]).sum(1)
    H_pos, H = h_pos.cumsum(1), (h_pos + h_neg).cumsum(1)
    bins = torch.where(H > 0, h_pos * H_pos / torch.where(H > 0, H, torch.ones_like(H)), 0.0)
    n_pos = pos.sum(1)
    valid = n_pos > 0
    return 1 - (bins.sum(1)[valid] / n_pos[valid]).mean()


def _batch(n: int, d: int, classes: int, *, seed: int = 0, norm: float = 1.0,
           dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = norm * normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, classes, (n,), generator=g)
    return X.to(dtype), y


def _grad(X: torch.Tensor, y: torch.Tensor, nbins: int = 10, gradient: str = "exact",
          scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    X = X.detach().clone().requires_grad_(True)
    loss = FastAPLoss(nbins, gradient=gradient)(X, y)
    (scale * loss).backward()
    return loss.detach(), X.grad


@pytest.mark.parametrize(("nbins", "norm"), [(10, 1.0), (5, 1.0), (40, 1.0), (10, 1.5)])
def test_exact_gradient_matches_dense_autograd(nbins: int, norm: float) -> None:
    """Value and exact gradient equal the dense textbook version (norm 1.5: distances
    clamped at 0 and beyond the last bin)."""
    X, y = _batch(40, 6, 5, seed=nbins, norm=norm)
    loss, grad = _grad(X, y, nbins)
    Xr = X.clone().requires_grad_(True)
    ref = dense_loss(Xr, y, nbins)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-12
    assert torch.allclose(grad, Xr.grad, rtol=0, atol=1e-10 * Xr.grad.abs().max())


def test_exact_gradient_matches_central_differences() -> None:
    X, y = _batch(12, 4, 3, seed=1)
    X.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fastap_loss(x, y, 10), (X,), eps=1e-7,
                                    atol=1e-6, rtol=1e-5)


def test_matlab_gradient_is_minus_half_the_objective_gradient() -> None:
    """``FastAP.m``'s ``dInputs`` is ``-0.5 d(objective)/dX``, objective = sum of AP."""
    X, y = _batch(24, 5, 4, seed=2)
    n_pos = (y[:, None] == y[None, :]).sum(1) - 1
    Q = int((n_pos > 0).sum())

    def objective(x: torch.Tensor) -> float:
        return Q * (1 - fastap_loss(x, y, 10).item())

    _, grad = _grad(X, y, gradient="matlab")
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(X.shape, generator=g, dtype=torch.float64)
        h = 1e-7
        fd = (objective(X + h * v) - objective(X - h * v)) / (2 * h)
        assert abs((grad * v).sum().item() - (-0.5 * fd)) <= 1e-5 * abs(fd) + 1e-8
    _, exact = _grad(X, y, gradient="exact")
    assert torch.allclose(grad, Q / 2 * exact, rtol=1e-10, atol=1e-12)


def test_matlab_gradient_matches_the_reference_layer() -> None:
    X, y = _batch(30, 7, 4, seed=4)
    _, grad = _grad(X, y, 10, gradient="matlab")
    ref = fm.fastap_matlab_forward_backward(X.T.contiguous(), y, 10, matlab_precision=False)
    dInputs = ref["dInputs"].reshape(X.shape[1], X.shape[0]).T
    assert torch.allclose(grad, dInputs, rtol=0, atol=1e-12 * dInputs.abs().max())


@pytest.mark.parametrize("gradient", ["exact", "matlab"])
def test_upstream_gradient_scales_the_result(gradient: str) -> None:
    X, y = _batch(16, 4, 3, seed=5)
    _, g1 = _grad(X, y, gradient=gradient)
    _, g3 = _grad(X, y, gradient=gradient, scale=-2.5)
    assert torch.allclose(g3, -2.5 * g1, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_every_fixture_average(case: str) -> None:
    """``1 - loss`` is MATLAB's ``average`` from X alone; no positives: loss exactly 0."""
    mat = scipy.io.loadmat(FIXTURES / f"{case}.mat")
    X = torch.from_numpy(mat["X"]).T.contiguous()
    y = torch.from_numpy(mat["Y"][:, 0])
    loss = FastAPLoss(int(mat["nbins"][0, 0]), gradient="matlab")(X, y)
    assert loss.dtype == X.dtype
    average = float(mat["average"][0, 0])
    if np.isnan(average):
        assert loss.item() == 0.0
    else:
        tol = 1e-12 if X.dtype == torch.float64 else 1e-6
        assert abs(1 - loss.item() - average) <= tol


def test_distances_exactly_on_bin_centres_follow_the_layer() -> None:
    """MATLAB's ``dSoftBinning`` counts a distance on a centre in the left half; so do we."""
    mat = scipy.io.loadmat(FIXTURES / "edge_bin_centres_nbins8.mat")
    X = torch.from_numpy(mat["X"]).T.contiguous()
    _, grad = _grad(X, torch.from_numpy(mat["Y"][:, 0]), 8, gradient="matlab")
    ref = -torch.from_numpy(mat["d_AP_x"]).T
    assert torch.allclose(grad, ref, rtol=0, atol=1e-12 * ref.abs().max())


@pytest.mark.parametrize("gradient", ["exact", "matlab"])
def test_no_positives_gives_zero_loss_and_gradient(gradient: str) -> None:
    X, _ = _batch(6, 4, 1, seed=6)
    loss, grad = _grad(X, torch.arange(6), gradient=gradient)
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("gradient", ["exact", "matlab"])
def test_degenerate_batches_are_finite(gradient: str) -> None:
    X, _ = _batch(8, 3, 1, seed=7)
    dup = torch.cat([X[:4], X[:4]])  # duplicates: distance exactly 0
    antipodes = torch.cat([X[:4], -X[:4]])  # distance exactly 4
    for emb, y in ((X, torch.zeros(8)), (dup, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])),
                   (antipodes, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
                   (X[:1], torch.zeros(1)), (X[:2], torch.zeros(2)), (X[:2], torch.arange(2))):
        loss, grad = _grad(emb, y, gradient=gradient)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert 0.0 <= loss.item() <= 1.0
    one_class_loss, _ = _grad(X, torch.zeros(8), gradient=gradient)
    assert one_class_loss.item() == pytest.approx(0.0, abs=1e-15)


def test_float32_agrees_with_float64() -> None:
    X, y = _batch(64, 16, 6, seed=8)
    l64, g64 = _grad(X, y)
    l32, g32 = _grad(X.float(), y)
    assert l32.dtype == torch.float32 and g32.dtype == torch.float32
    assert abs(l32.item() - l64.item()) <= 1e-5
    assert (g32.double() - g64).abs().max() <= 1e-4 * g64.abs().max()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match="gradient"):
        FastAPLoss(gradient="fast")
    with pytest.raises(InputError, match="num_bins"):
        FastAPLoss(num_bins=0)
    with pytest.raises(InputError, match="labels"):
        FastAPLoss()(torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(InputError, match="N x D"):
        FastAPLoss()(torch.zeros(4), torch.zeros(4))
    assert "num_bins=10" in repr(FastAPLoss())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gradient", ["exact", "matlab"])
def test_cuda_matches_cpu(gradient: str) -> None:
    X, y = _batch(200, 32, 10, seed=9)
    loss, grad = _grad(X, y, gradient=gradient)
    lc, gc = _grad(X.cuda(), y.cuda(), gradient=gradient)
    assert gc.device.type == "cuda"
    assert abs(lc.item() - loss.item()) <= 1e-12
    assert torch.allclose(gc.cpu(), grad, rtol=0, atol=1e-10 * grad.abs().max())
    l32, g32 = _grad(X.float().cuda(), y.cuda(), gradient=gradient)
    assert abs(l32.item() - loss.item()) <= 1e-5


def test_tiled_symmetrisation_equals_g_plus_g_transpose() -> None:
    from reproduce.loss.fastap_loss import _symmetrise_

    G = torch.randn(300, 300, generator=torch.Generator().manual_seed(1))
    expected = G + G.T
    assert torch.equal(_symmetrise_(G.clone(), block=64), expected)  # 300 = 4 * 64 + 44
    assert torch.equal(_symmetrise_(G.clone(), block=512), expected)


@pytest.mark.parametrize("gradient", ["exact", "matlab"])
def test_row_chunks_give_the_same_loss_and_gradient(monkeypatch: pytest.MonkeyPatch,
                                                    gradient: str) -> None:
    import reproduce.loss.fastap_loss as module

    gen = torch.Generator().manual_seed(3)
    # float64: a row chunk's matrix product may round differently from the whole one
    X = torch.nn.functional.normalize(torch.randn(90, 16, generator=gen, dtype=torch.float64),
                                      dim=1) * 1.2
    labels = torch.randint(0, 12, (90,), generator=gen)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        Xg = X.clone().requires_grad_()
        loss = FastAPLoss(10, gradient=gradient)(Xg, labels)
        loss.backward()
        return loss.detach(), Xg.grad

    whole = run()
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 7 * 90)  # 13 chunks of 7 rows (last 6)
    chunked = run()
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-13, atol=0.0)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-15)
