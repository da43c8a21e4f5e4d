"""MatConvNet's Adam and the BatchNorm moments update, against saved MATLAB calls."""

from __future__ import annotations

import copy
import math
import shutil

import numpy as np
import pytest
import scipy.io
import torch

from reproduce import paths
from reproduce.parity.run import check_fixture
from reproduce.parity.training import check_adam_fixture
from reproduce.training.optimizer import McnAdam, average_update

TRAINING = paths.FIXTURES / "training_matlab"
ADAM_CASES = sorted(TRAINING.glob("adam_*.mat"))
PARAMS = ("conv1_filter", "fc_w", "fc_b", "nodecay_bias", "decay_only", "frozen", "bn1_moments")


@pytest.mark.parametrize("path", ADAM_CASES, ids=lambda p: p.stem)
def test_every_saved_adam_call_is_replayed(path) -> None:
    rows = check_fixture(path)  # detected by its fields
    failed = [(r.quantity, r.max_rel_err) for r in rows if not r.passed]
    assert not failed
    quantities = {r.quantity for r in rows}
    for k in (1, 2, 3):
        for name in PARAMS:
            assert f"step{k}.{name}.value" in quantities
    # measured: the port performs MATLAB's operations in its order and class: bit-identical
    assert max(r.max_abs_err for r in rows) == 0.0


def test_the_adam_check_fails_when_a_derivative_is_changed(tmp_path) -> None:
    src = TRAINING / "adam_fresh_wd_single.mat"
    mat = scipy.io.loadmat(src)
    der = mat["der"][0, 0]["step2"][0, 0]["fc_w"]
    der[0, 0, 0, 0] *= 1.001
    bad = tmp_path / "perturbed.mat"
    scipy.io.savemat(bad, {k: v for k, v in mat.items() if not k.startswith("__")})
    rows = check_adam_fixture(bad)
    failed = {r.quantity for r in rows if not r.passed}
    assert "step2.fc_w.value" in failed and "step1.fc_w.value" not in failed
    shutil.rmtree(tmp_path)


def test_update_formula_with_multipliers_and_coupled_decay() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(5, dtype=torch.float64)
    ders = [torch.randn(5, dtype=torch.float64) for _ in range(3)]
    p = torch.nn.Parameter(w0.clone())
    opt = McnAdam([{"params": [p], "lr_mult": 10.0, "decay_mult": 2.0}], lr=1e-3,
                  weight_decay=5e-4)
    w, m, v = w0.numpy().copy(), np.zeros(5), np.zeros(5)
    for t, der in enumerate(ders, start=1):
        p.grad = der.clone()
        opt.step(batch_size=8)
        g = der.numpy() / 8 + 5e-4 * 2.0 * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g ** 2
        w = w - 1e-2 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-14, atol=0)
    assert opt.state[p]["t"] == 3


def test_skipped_parameters_keep_an_empty_state() -> None:
    frozen = torch.nn.Parameter(torch.ones(3))
    decay_only = torch.nn.Parameter(torch.ones(3))
    no_grad = torch.nn.Parameter(torch.ones(3))
    opt = McnAdam([{"params": [frozen], "lr_mult": 0.0, "decay_mult": 0.0},
                   {"params": [decay_only], "lr_mult": 0.0},
                   {"params": [no_grad]}], lr=1e-3, weight_decay=1e-4)
    frozen.grad = torch.ones(3)
    decay_only.grad = torch.ones(3)
    opt.step(batch_size=4)
    assert not opt.state[frozen] and not opt.state[no_grad]
    assert opt.state[decay_only]["t"] == 1  # Adam ran at rate 0: state moves, value stays
    assert torch.equal(decay_only.detach(), torch.ones(3))
    assert torch.equal(frozen.detach(), torch.ones(3))
    # with no decay either the decay-only parameter is skipped as well
    opt2 = McnAdam([{"params": [p := torch.nn.Parameter(torch.ones(2))], "lr_mult": 0.0}])
    p.grad = torch.ones(2)
    opt2.step(batch_size=1)
    assert not opt2.state[p]


def test_moments_average_ignores_the_learning_rate() -> None:
    moments = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    batch = torch.tensor([[0.5, 1.5], [2.5, 3.5]], dtype=torch.float64)
    out = average_update(moments, batch * 12, 0.1, 12)
    np.testing.assert_allclose(out.numpy(), 0.9 * moments.numpy() + 0.1 * batch.numpy(),
                               rtol=1e-15)


def test_optimizer_state_dict_round_trip() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = McnAdam([p], lr=1e-2)
    p.grad = torch.full((3,), 0.5)
    opt.step(batch_size=2)
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = McnAdam([q], lr=1e-2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch shares state tensors
    p.grad = q.grad = torch.full((3,), -0.25)
    opt.step(batch_size=2)
    opt2.step(batch_size=2)
    assert torch.equal(p, q) and opt2.state[q]["t"] == 2
