"""MatConvNet BatchNorm: normal and test mode, its backward, the moments update, swapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from converters.fastap.families import FAMILY_RESNET18_PT, convert_fastap
from reproduce.training.batchnorm import (
    McnBatchNorm2d,
    mcn_batchnorms,
    mcn_sources,
    swap_to_mcn,
    swap_to_torch,
    update_moments,
)


def _bn(C: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> McnBatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = McnBatchNorm2d(C, dtype=dtype)
    with torch.no_grad():
        bn.mult.copy_(torch.rand(C, generator=g, dtype=dtype) + 0.5)
        bn.bias.copy_(torch.randn(C, generator=g, dtype=dtype))
        bn.moments[:, 0] = torch.randn(C, generator=g, dtype=dtype)
        bn.moments[:, 1] = torch.rand(C, generator=g, dtype=dtype) + 0.5
    return bn


def _reference_normal(x, mult, bias, eps):
    """vl_nnbnorm's normal mode written out: batch mean, biased variance, + epsilon."""
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return mult.view(1, -1, 1, 1) * (x - mu) / torch.sqrt(var + eps) + bias.view(1, -1, 1, 1)


def test_normal_mode_forward_and_backward_match_the_written_out_formula() -> None:
    bn = _bn()
    x = torch.randn(5, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    y = bn(x)
    (y * seed).sum().backward()
    ours = (x.grad.clone(), bn.mult.grad.clone(), bn.bias.grad.clone())
    x.grad = None
    mult = bn.mult.detach().clone().requires_grad_(True)
    bias = bn.bias.detach().clone().requires_grad_(True)
    ref = _reference_normal(x, mult, bias, 1e-5)
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    (ref * seed).sum().backward()
    for a, b in zip(ours, (x.grad, mult.grad, bias.grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_normal_mode_backward_against_finite_differences() -> None:
    bn = _bn(C=2, seed=1)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, m, b: nn.functional.batch_norm(
        inp, None, None, m, b, training=True, eps=1e-5), (x, bn.mult, bn.bias))
    assert torch.autograd.gradcheck(bn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_batch_moments_are_recorded_and_averaged_into_the_moments() -> None:
    bn = _bn(C=2, seed=2)
    before = bn.moments.clone()
    x = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    bn(x)
    mu = x.mean(dim=(0, 2, 3))
    sigma = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + 1e-5)
    torch.testing.assert_close(bn.batch_moments, torch.stack([mu, sigma], 1), rtol=1e-14,
                               atol=1e-14)
    assert update_moments(bn) == 1
    torch.testing.assert_close(bn.moments, 0.9 * before + 0.1 * torch.stack([mu, sigma], 1),
                               rtol=1e-14, atol=1e-14)
    assert update_moments(bn) == 0  # once per recorded forward


def test_test_mode_uses_the_stored_moments_without_epsilon() -> None:
    bn = _bn(seed=3).eval()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    mu, sigma = bn.moments[:, 0].view(1, -1, 1, 1), bn.moments[:, 1].view(1, -1, 1, 1)
    expected = bn.mult.view(1, -1, 1, 1) / sigma * (x - mu) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected, rtol=1e-15, atol=1e-15)
    assert bn.batch_moments is None  # test mode records nothing


@pytest.fixture(scope="module")
def converted(build):
    net = build.net(FAMILY_RESNET18_PT)
    return net, convert_fastap(net, dtype=torch.float64)


def test_swap_with_the_checkpoint_restores_matconvnet_values_exactly(converted) -> None:
    net, model = converted
    model = _copy(model)
    sources = mcn_sources(net, model)
    swapped = swap_to_mcn(model, sources=sources)
    assert len(swapped) == 20 and not any(isinstance(m, nn.BatchNorm2d)
                                          for m in model.modules())
    layer = net.layer("features_1")
    bn = swapped["base.bn1"]
    np.testing.assert_array_equal(bn.mult.detach().numpy(),
                                  net.params[layer.params[0]].value.ravel())
    np.testing.assert_array_equal(bn.moments.numpy(), net.params[layer.params[2]].value)
    # and back: the converter's fold, bit for bit
    original = convert_fastap(net, dtype=torch.float64)
    swap_to_torch(model)
    ours = dict(model.named_buffers()) | dict(model.named_parameters())
    for name, value in (dict(original.named_buffers()) | dict(original.named_parameters())
                        ).items():
        assert torch.equal(ours[name], value), name


def test_swap_without_sources_is_exact_in_test_mode(converted) -> None:
    _, model = converted
    model = _copy(model).eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        swap_to_mcn(model)
        assert all(bn.moments[:, 1].eq(1).all() for bn in mcn_batchnorms(model))
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-13)


def _copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model)
