"""The stage-by-stage reproduction of ``FastAP.m`` against the saved MATLAB values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from reproduce import paths
from reproduce.loss import fastap_matlab as fm

FIXTURES = paths.FIXTURES / "fastap_matlab"
CASES = sorted(p.stem for p in FIXTURES.glob("*.mat"))
SINGLE = [c for c in CASES
          if str(scipy.io.loadmat(FIXTURES / f"{c}.mat", variable_names=["precision"])
                 ["precision"][0]) == "single"]
DOUBLE = [c for c in CASES if c not in SINGLE]
FORWARD = ("dist2", "I_pos", "I_neg", "N_pos", "h_pos", "h_neg", "H_pos", "h", "H",
           "FastAP_bins", "FastAP_query", "objective", "average")
BACKWARD = ("H_neg", "d_AP_h_pos", "d_AP_h_neg", "d_AP_x", "dInputs")


def _load(case: str) -> dict:
    return scipy.io.loadmat(FIXTURES / f"{case}.mat")


def _t(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value))


def _assert_close(ours: torch.Tensor, theirs: np.ndarray, rel: float, name: str) -> None:
    a = ours.detach().double().numpy().reshape(np.shape(theirs))
    b = np.asarray(theirs, dtype=np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name}: NaN pattern differs"
    ok = ~np.isnan(b)
    scale = np.abs(b[ok]).max() if ok.any() else 0.0
    err = np.abs(a[ok] - b[ok]).max() if ok.any() else 0.0
    assert err <= rel * scale, f"{name}: max error {err:.3e} > {rel:g} * {scale:.3e}"


def test_every_shipped_case_is_covered() -> None:
    assert len(CASES) >= 15
    assert {"tiny_double", "tiny_single", "sop_m256_d512_single", "edge_no_positives"} <= set(CASES)


@pytest.mark.parametrize("case", DOUBLE)
def test_double_cases_end_to_end(case: str) -> None:
    """Double features: every intermediate from X alone to ~1e-12 of its largest entry."""
    mat = _load(case)
    out = fm.fastap_matlab_forward_backward(_t(mat["X"]), _t(mat["Y"]), int(mat["nbins"][0, 0]),
                                            Z=_t(mat["Z"]))
    for name in FORWARD + BACKWARD[:-1]:
        _assert_close(out[name], mat[name], 1e-12, f"{case}.{name}")
    assert out["dInputs"].dtype == torch.float32  # -single(d_AP_x)
    _assert_close(out["dInputs"], mat["dInputs"], 2 ** -23, f"{case}.dInputs")


@pytest.mark.parametrize("case", SINGLE)
def test_single_cases_stage_by_stage(case: str) -> None:
    """Single features, each stage fed MATLAB's inputs: the histograms come out bit for bit
    (single pulses summed in single column by column, stored as double), the double stages
    to 1e-12, ``d_AP_x`` to a few float32 roundings (the product's summation order)."""
    mat = _load(case)
    X, Z, Delta = _t(mat["X"]), _t(mat["Z"]).reshape(-1), float(mat["Delta"][0, 0])
    assert X.dtype == torch.float32
    dist2 = fm.pairwise_dist2(X)
    assert dist2.dtype == torch.float32
    _assert_close(dist2, mat["dist2"], 4 * X.shape[0] * 2 ** -24, f"{case}.dist2")
    I_pos, I_neg, N_pos = fm.affinity(_t(mat["Y"]))
    for name, ours in (("I_pos", I_pos), ("I_neg", I_neg), ("N_pos", N_pos)):
        np.testing.assert_array_equal(ours.numpy(), mat[name])
    h_pos, h_neg = fm.soft_histograms(_t(mat["dist2"]), I_pos, I_neg, Z, Delta)
    assert h_pos.dtype == torch.float64
    np.testing.assert_array_equal(h_pos.numpy(), mat["h_pos"])
    np.testing.assert_array_equal(h_neg.numpy(), mat["h_neg"])
    fwd = fm.fastap_from_histograms(_t(mat["h_pos"]), _t(mat["h_neg"]), _t(mat["N_pos"]))
    for name in ("H_pos", "h", "H", "FastAP_bins", "FastAP_query", "objective", "average"):
        _assert_close(fwd[name], mat[name], 1e-12, f"{case}.{name}")
    bwd = fm.histogram_gradients(_t(mat["h_pos"]), _t(mat["H_pos"]), _t(mat["H"]),
                                 _t(mat["N_pos"]))
    for name in ("H_neg", "d_AP_h_pos", "d_AP_h_neg"):
        _assert_close(bwd[name], mat[name], 1e-12, f"{case}.{name}")
    grad = fm.input_gradient(X, _t(mat["dist2"]), I_pos, I_neg, Z, Delta,
                             _t(mat["d_AP_h_pos"]), _t(mat["d_AP_h_neg"]))
    assert grad["d_AP_x"].dtype == torch.float32
    _assert_close(grad["d_AP_x"], mat["d_AP_x"], 4e-7, f"{case}.d_AP_x")
    _assert_close(grad["dInputs"], mat["dInputs"], 4e-7, f"{case}.dInputs")


@pytest.mark.parametrize("case", SINGLE)
def test_single_cases_end_to_end_forward(case: str) -> None:
    """From X alone in single, the objective agrees to float32 rounding."""
    mat = _load(case)
    out = fm.fastap_matlab_forward_backward(_t(mat["X"]), _t(mat["Y"]), int(mat["nbins"][0, 0]))
    _assert_close(out["objective"], mat["objective"], 1e-6, f"{case}.objective")
    _assert_close(out["h_pos"], mat["h_pos"], 1e-5, f"{case}.h_pos")


def test_bin_centres_match_linspace_to_the_last_bits() -> None:
    for case in CASES:
        mat = _load(case)
        Z, Delta = fm.bin_centres(int(mat["nbins"][0, 0]))
        assert Delta == mat["Delta"][0, 0]
        assert np.abs(Z.numpy() - mat["Z"].ravel()).max() <= 2 * np.spacing(4.0)


def test_no_positives_gives_nan_average_and_zero_objective() -> None:
    X = torch.nn.functional.normalize(torch.randn(3, 5, dtype=torch.float64), dim=0)
    out = fm.fastap_matlab_forward_backward(X, torch.arange(5.0)[:, None], 10)
    assert out["objective"].item() == 0.0
    assert torch.isnan(out["average"])
    assert torch.isnan(out["FastAP_query"]).all()
    assert torch.count_nonzero(out["dInputs"]) == 0


def test_non_matlab_precision_keeps_the_input_dtype() -> None:
    X = torch.nn.functional.normalize(torch.randn(6, 10), dim=0)
    Y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 3, 4])
    out = fm.fastap_matlab_forward_backward(X, Y, 10, matlab_precision=False)
    assert out["h_pos"].dtype == torch.float32
    assert out["dInputs"].dtype == torch.float32
    ref = fm.fastap_matlab_forward_backward(X.double(), Y, 10, matlab_precision=False)
    assert torch.allclose(out["objective"].double(), ref["objective"], rtol=1e-5)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="nbins"):
        fm.bin_centres(0)
    with pytest.raises(ValueError, match="label rows"):
        fm.fastap_matlab_forward_backward(torch.zeros(3, 4), torch.zeros(5), 10)
