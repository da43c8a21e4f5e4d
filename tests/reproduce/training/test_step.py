"""The training step: saved MATLAB batches, the accumulate variant, flips, modes, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.io
import torch

from reproduce import paths
from reproduce.errors import InputError
from reproduce.parity.run import check_fixture
from reproduce.parity.training_step import StepNet, check_step_fixture, fixture_net
from reproduce.training.optimizer import McnAdam
from reproduce.training.step import TrainStep, apply_flips, chunk_slices, draw_flips

TRAINING = paths.FIXTURES / "training_matlab"
STEP_CASES = sorted(TRAINING.glob("step_*.mat"))


@pytest.fixture(scope="module")
def step_rows() -> dict:
    return {path.stem: check_fixture(path) for path in STEP_CASES}


@pytest.mark.parametrize("path", STEP_CASES, ids=lambda p: p.stem)
def test_every_saved_batch_is_reproduced(step_rows, path) -> None:
    rows = step_rows[path.stem]
    failed = [(r.quantity, r.max_rel_err, r.note) for r in rows if not r.passed]
    assert not failed
    quantities = {r.quantity for r in rows}
    staged = "staged" in path.stem
    chunks = 3 if staged else 1
    for k in (1, 2):
        assert f"step{k}.batch_objective" in quantities
        assert f"step{k}.adam.fc_w.t" in quantities
        for c in range(1, chunks + 1):
            for q in ("feats_l2", "dzdfeats", "der.conv1_filter", "der.bn2_moments",
                      "params.fc_w", "params.bn1_moments"):
                assert f"step{k}.chunk{c}.{q}" in quantities
        if staged:
            assert {f"step{k}.gradientMat", f"step{k}.embeddingMat",
                    f"step{k}.stage1.chunk3.feats_l2"} <= quantities


def test_exact_files_agree_to_float32_rounding(step_rows) -> None:
    for stem, rows in step_rows.items():
        if not stem.endswith("exact"):
            continue
        by_kind = {r.quantity: r.max_rel_err for r in rows}
        assert max(v for q, v in by_kind.items() if q.endswith("feats_l2")) < 1e-6
        assert max(v for q, v in by_kind.items() if ".params." in q) < 2e-6


def test_a_changed_saved_derivative_fails() -> None:
    mat = scipy.io.loadmat(TRAINING / "step_plain_m12_exact.mat")
    ders = mat["step1"][0, 0]["chunk"][0, 0][0, 0]["param_ders"][0, 0]
    ders["fc_w"][0, 0].flat[0] *= 1.01
    failed = {r.quantity for r in check_step_fixture(TRAINING / "perturbed.mat", mat)
              if not r.passed}
    assert failed == {"step1.chunk1.der.fc_w"}


def _tiny(dtype: torch.dtype = torch.float64) -> tuple[StepNet, torch.Tensor, torch.Tensor]:
    mat = scipy.io.loadmat(TRAINING / "step_staged_m12_g5_exact.mat")
    net = fixture_net(mat)
    model = StepNet(net, dtype=dtype)
    images = torch.from_numpy(np.ascontiguousarray(mat["images"].transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(mat["labels"][:, 0].astype(np.float64))
    return model, images[:12].to(dtype), labels[:12]


def _run(model, images, labels, **kw):
    opt = McnAdam([p for p in model.parameters()], lr=1e-3, weight_decay=5e-4)
    step = TrainStep(model, opt, gradient_dtype=torch.float64, **kw)
    return step(images, labels), opt


def test_accumulate_equals_the_full_batch_gradient_with_frozen_batchnorm() -> None:
    model, images, labels = _tiny()
    plain_model = copy.deepcopy(model)
    moments = [b.clone() for b in model.buffers()]
    res_a, opt_a = _run(model, images, labels, mode="accumulate", max_gpu_imgs=5, bn_mode="test")
    res_p, opt_p = _run(plain_model, images, labels, mode="plain", bn_mode="test")
    assert res_a.n_updates == res_p.n_updates == 1 and res_a.chunk_sizes == [5, 5, 2]
    assert res_a.objective == pytest.approx(res_p.objective, rel=1e-12)
    for a, p in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(opt_a.state[a]["m"], opt_p.state[p]["m"], rtol=1e-10,
                                   atol=1e-16)
        torch.testing.assert_close(a, p, rtol=1e-12, atol=1e-15)
    for before, after in zip(moments, model.buffers(), strict=True):
        assert torch.equal(before, after)  # test mode: no moments recorded


def test_staged_takes_one_step_per_chunk_on_updated_weights() -> None:
    model, images, labels = _tiny()
    res, opt = _run(model, images, labels, max_gpu_imgs=5)
    assert res.mode == "staged" and res.n_updates == 3 and res.chunk_sizes == [5, 5, 2]
    assert {s["t"] for s in opt.state.values()} == {3}
    model2, images, labels = _tiny()
    res2, opt2 = _run(model2, images, labels, max_gpu_imgs=12)
    assert res2.mode == "plain" and {s["t"] for s in opt2.state.values()} == {1}


def test_both_passes_see_the_same_flipped_images() -> None:
    model, images, labels = _tiny()
    flips = draw_flips(12, torch.Generator().manual_seed(3))
    assert 0 < int(flips.sum()) < 12
    flipped = apply_flips(images, flips)
    np.testing.assert_array_equal(flipped[flips].numpy(), images[flips].flip(-1).numpy())
    np.testing.assert_array_equal(flipped[~flips].numpy(), images[~flips].numpy())
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    _run(model, flipped, labels, max_gpu_imgs=5)
    assert len(seen) == 6  # 3 chunks in stage 1, 3 in stage 3
    for first, second in zip(seen[:3], seen[3:], strict=True):
        assert torch.equal(first, second)
    assert torch.equal(torch.cat(seen[:3]), flipped)


def test_chunks_and_bad_options() -> None:
    assert chunk_slices(256, 90) == [slice(0, 90), slice(90, 180), slice(180, 256)]
    assert chunk_slices(96, 90) == [slice(0, 90), slice(90, 96)]
    model, images, labels = _tiny()
    opt = McnAdam(model.parameters())
    with pytest.raises(InputError, match="mode"):
        TrainStep(model, opt, mode="fast")
    with pytest.raises(InputError, match="maxGpuImgs"):
        TrainStep(model, opt, max_gpu_imgs=0)
    with pytest.raises(InputError, match="BatchNorm mode"):
        TrainStep(model, opt, bn_mode="frozen")
    with pytest.raises(InputError, match="labels"):
        TrainStep(model, opt)(images, labels[:5])
    with pytest.raises(InputError, match="one flag per image"):
        apply_flips(images, torch.ones(3, dtype=torch.bool))
