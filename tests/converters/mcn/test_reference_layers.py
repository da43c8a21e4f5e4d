"""The numpy reference kernels against hand-derived values and straightforward loop versions.

The loop versions below are written from MatConvNet's definitions (``vl_nnconv``,
``vl_nnconvt``, ``vl_nnpool``, ``vl_nnnormalize``), one output element at a time, and share
no code with ``converters.mcn.reference_layers``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from converters.errors import MatConvNetError
from converters.mcn.layer_specs import (
    BatchNormSpec,
    ConcatSpec,
    ConvSpec,
    ConvTransposeSpec,
    FlattenSpec,
    LRNSpec,
    PermuteSpec,
    PoolingSpec,
    ReLUSpec,
    SoftMaxSpec,
    SumSpec,
)
from converters.mcn.reference_layers import (
    batch_norm,
    concat,
    conv,
    conv_transpose,
    flatten,
    lrn,
    permute,
    pooling,
    relu,
    softmax,
    sum_layer,
)

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- loop versions (independent)

def loop_conv(x: np.ndarray, f: np.ndarray, b: np.ndarray | None, pad: tuple[int, ...],
              stride: tuple[int, int], dilate: tuple[int, int]) -> np.ndarray:
    """vl_nnconv, one output at a time; out-of-range input reads count as zero."""
    H, W, C, N = x.shape
    kh, kw, cg, K = f.shape
    G = C // cg
    Kg = K // G
    pt, pb, pl, pr = pad
    Ho = math.floor((H + pt + pb - (dilate[0] * (kh - 1) + 1)) / stride[0]) + 1
    Wo = math.floor((W + pl + pr - (dilate[1] * (kw - 1) + 1)) / stride[1]) + 1
    y = np.zeros((Ho, Wo, K, N))
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for u in range(Ho):
                for v in range(Wo):
                    acc = 0.0 if b is None else float(b[k])
                    for i in range(kh):
                        for j in range(kw):
                            r = u * stride[0] + i * dilate[0] - pt
                            c = v * stride[1] + j * dilate[1] - pl
                            if 0 <= r < H and 0 <= c < W:
                                for d in range(cg):
                                    acc += f[i, j, d, k] * x[r, c, g * cg + d, n]
                    y[u, v, k, n] = acc
    return y


def loop_convt(x: np.ndarray, f: np.ndarray, b: np.ndarray | None, upsample: tuple[int, int],
               crop: tuple[int, ...], groups: int) -> np.ndarray:
    """vl_nnconvt by scattering: x(u,v,d) adds F(i,j,k,d) x to y(up*u+i, up*v+j, g*K+k)."""
    H, W, D, N = x.shape
    fh, fw, K, _ = f.shape
    dg = D // groups
    full = np.zeros((upsample[0] * (H - 1) + fh, upsample[1] * (W - 1) + fw, K * groups, N))
    for n in range(N):
        for u in range(H):
            for v in range(W):
                for d in range(D):
                    g = d // dg
                    for i in range(fh):
                        for j in range(fw):
                            for k in range(K):
                                full[upsample[0] * u + i, upsample[1] * v + j, g * K + k, n] += (
                                    f[i, j, k, d] * x[u, v, d, n])
    ct, cb, cl, cr = crop
    y = full[ct: full.shape[0] - cb, cl: full.shape[1] - cr]
    if b is not None:
        y = y + b.reshape(1, 1, -1, 1)
    return y


def loop_pool(x: np.ndarray, method: str, size: tuple[int, int], pad: tuple[int, ...],
              stride: tuple[int, int]) -> np.ndarray:
    """vl_nnpool: each window clipped to the input, then max or mean of what is left."""
    H, W, C, N = x.shape
    pt, pb, pl, pr = pad
    Ho = (H + pt + pb - size[0]) // stride[0] + 1
    Wo = (W + pl + pr - size[1]) // stride[1] + 1
    y = np.zeros((Ho, Wo, C, N))
    for u in range(Ho):
        for v in range(Wo):
            r1, c1 = u * stride[0] - pt, v * stride[1] - pl
            r2, c2 = min(r1 + size[0], H), min(c1 + size[1], W)
            r1, c1 = max(r1, 0), max(c1, 0)
            window = x[r1:r2, c1:c2]
            y[u, v] = window.max(axis=(0, 1)) if method == "max" else window.mean(axis=(0, 1))
    return y


def loop_lrn(x: np.ndarray, depth: int, kappa: float, alpha: float, beta: float) -> np.ndarray:
    """vl_nnnormalize with window [k - floor((N-1)/2), k + ceil((N-1)/2)] clipped."""
    C = x.shape[2]
    y = np.zeros_like(x)
    for k in range(C):
        lo = max(0, k - (depth - 1) // 2)
        hi = min(C - 1, k + math.ceil((depth - 1) / 2))
        s = (x[:, :, lo: hi + 1] ** 2).sum(axis=2)
        y[:, :, k] = x[:, :, k] * (kappa + alpha * s) ** (-beta)
    return y


def conv_spec(f: np.ndarray, b: np.ndarray | None = None, pad: tuple[int, ...] = (0, 0, 0, 0),
              stride: tuple[int, int] = (1, 1), dilate: tuple[int, int] = (1, 1)) -> ConvSpec:
    return ConvSpec(f, b, tuple(pad), stride, dilate)  # type: ignore[arg-type]


# ---------------------------------------------------------------- conv

def test_conv_hand_values_pad_is_top_bottom_left_right() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    f = np.ones((2, 2, 1, 1))
    # pad [top=1 bottom=0 left=0 right=0]: 2 output rows, 1 column
    y = conv(x, conv_spec(f, pad=(1, 0, 0, 0)))
    assert y.shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(y[:, 0, 0, 0], [1 + 2, 1 + 2 + 3 + 4])
    # pad [0 0 1 0] (left): 1 row, 2 columns: [1+3, 1+2+3+4]
    y = conv(x, conv_spec(f, pad=(0, 0, 1, 0)))
    np.testing.assert_array_equal(y[0, :, 0, 0], [1 + 3, 10])


def test_conv_is_cross_correlation_without_flip() -> None:
    x = np.arange(9.0).reshape(3, 3, 1, 1)  # x[r, c] = 3r + c
    f = np.zeros((3, 3, 1, 1))
    f[0, 2, 0, 0] = 1.0  # top-right tap reads x[u - 1, v + 1]
    y = conv(x, conv_spec(f, pad=(1, 1, 1, 1)))
    assert y[1, 1, 0, 0] == x[0, 2, 0, 0]
    assert y[2, 0, 0, 0] == x[1, 1, 0, 0]


def test_conv_output_size_floors() -> None:
    y = conv(np.ones((5, 7, 1, 1)), conv_spec(np.ones((2, 3, 1, 1)), stride=(2, 3)))
    assert y.shape == (2, 2, 1, 1)  # floor(3/2)+1, floor(4/3)+1


@pytest.mark.parametrize(("pad", "stride", "dilate", "groups"), [
    ((1, 2, 0, 3), (2, 1), (1, 1), 1),
    ((0, 1, 2, 1), (1, 2), (2, 1), 2),
    ((2, 2, 2, 2), (3, 2), (2, 3), 3),
    ((0, 0, 0, 0), (1, 1), (1, 1), 6),  # depthwise
])
def test_conv_matches_loop(pad: tuple[int, ...], stride: tuple[int, int],
                           dilate: tuple[int, int], groups: int) -> None:
    x = RNG.normal(size=(7, 8, 6, 2))
    f = RNG.normal(size=(3, 2, 6 // groups, 6))
    b = RNG.normal(size=6)
    got = conv(x, conv_spec(f, b, pad, stride, dilate))
    np.testing.assert_allclose(got, loop_conv(x, f, b, pad, stride, dilate), rtol=1e-12,
                               atol=1e-12)


def test_conv_float32_stays_float32() -> None:
    x = RNG.normal(size=(4, 4, 2, 1)).astype(np.float32)
    y = conv(x, conv_spec(RNG.normal(size=(3, 3, 2, 4)), RNG.normal(size=4), (1, 1, 1, 1)))
    assert y.dtype == np.float32


def test_conv_rejects_channel_mismatch_and_empty_output() -> None:
    with pytest.raises(MatConvNetError, match="net.mat: layer 'c'.*5 channels"):
        conv(np.ones((4, 4, 5, 1)), conv_spec(np.ones((1, 1, 2, 2))), "net.mat: layer 'c'")
    with pytest.raises(MatConvNetError, match="empty output"):
        conv(np.ones((2, 2, 1, 1)), conv_spec(np.ones((3, 3, 1, 1))))


# ---------------------------------------------------------------- conv transpose

@pytest.mark.parametrize(("upsample", "crop", "groups"), [
    ((1, 1), (0, 0, 0, 0), 1),
    ((2, 2), (0, 1, 0, 1), 1),
    ((2, 3), (1, 0, 2, 1), 2),
])
def test_conv_transpose_matches_loop(upsample: tuple[int, int], crop: tuple[int, ...],
                                     groups: int) -> None:
    x = RNG.normal(size=(4, 5, 4, 2))
    f = RNG.normal(size=(3, 4, 3, 4))  # FH x FW x K x D, output K * groups channels
    b = RNG.normal(size=3 * groups)
    spec = ConvTransposeSpec(f, b, upsample, crop, groups)  # type: ignore[arg-type]
    np.testing.assert_allclose(conv_transpose(x, spec), loop_convt(x, f, b, upsample, crop, groups),
                               rtol=1e-12, atol=1e-12)


def test_conv_transpose_is_the_adjoint_of_conv() -> None:
    """vl_nnconvt's definition: Y = M' X where conv(V, F) = M V (stride=upsample, pad=crop)."""
    upsample, crop = (2, 3), (1, 0, 0, 2)
    f = RNG.normal(size=(3, 4, 2, 5))  # as a conv bank: Cin 2, Cout 5
    x = RNG.normal(size=(4, 3, 5, 1))
    y = conv_transpose(x, ConvTransposeSpec(f, None, upsample, crop, 1))
    v = RNG.normal(size=y.shape)
    u = conv(v, conv_spec(f, None, crop, upsample))
    assert u.shape == x.shape
    assert np.vdot(u, x) == pytest.approx(np.vdot(v, y), rel=1e-12)


# ---------------------------------------------------------------- pooling

def test_avg_pool_divides_by_in_bounds_count() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    y = pooling(x, PoolingSpec("avg", (2, 2), (1, 0, 1, 0), (1, 1)))
    # windows: {1}, {1,2}, {1,3}, {1,2,3,4} (count_include_pad would give 0.25, 0.75, 1, 2.5)
    np.testing.assert_array_equal(y[:, :, 0, 0], [[1.0, 1.5], [2.0, 2.5]])


def test_max_pool_pads_with_minus_infinity() -> None:
    x = -np.arange(1.0, 5.0).reshape(2, 2, 1, 1)  # all negative
    y = pooling(x, PoolingSpec("max", (2, 2), (0, 1, 0, 1), (1, 1)))
    assert y.shape == (2, 2, 1, 1)
    assert y.max() < 0  # zero padding would have produced zeros
    np.testing.assert_array_equal(y[:, :, 0, 0], [[-1.0, -2.0], [-3.0, -4.0]])


@pytest.mark.parametrize("method", ["max", "avg"])
@pytest.mark.parametrize(("size", "pad", "stride"), [
    ((3, 3), (0, 1, 0, 1), (2, 2)),  # Caffe ResNet-50 pool1
    ((3, 3), (1, 1, 1, 1), (2, 2)),  # torchvision maxpool
    ((2, 3), (1, 0, 2, 1), (1, 2)),
    ((7, 7), (0, 0, 0, 0), (1, 1)),  # pool5 on a 7x7 map
])
def test_pooling_matches_loop(method: str, size: tuple[int, int], pad: tuple[int, ...],
                              stride: tuple[int, int]) -> None:
    x = RNG.normal(size=(7, 8, 3, 2))
    got = pooling(x, PoolingSpec(method, size, pad, stride))  # type: ignore[arg-type]
    np.testing.assert_allclose(got, loop_pool(x, method, size, pad, stride), rtol=1e-13)


# ---------------------------------------------------------------- batch norm, relu

def test_batch_norm_uses_sigma_without_epsilon() -> None:
    x = np.array([0.0, 1.0, 2.5]).reshape(1, 3, 1, 1) * np.ones((1, 1, 2, 1))
    spec = BatchNormSpec(mult=np.array([2.0, -1.0]), bias=np.array([1.0, 0.5]),
                         mu=np.array([1.0, 2.0]), sigma=np.array([1e-3, 4.0]))
    y = batch_norm(x, spec)
    # channel 0: 2 / 1e-3 * (x - 1) + 1; channel 1: -1 / 4 * (x - 2) + 0.5
    np.testing.assert_allclose(y[0, :, 0, 0], [-1999.0, 1.0, 3001.0], rtol=1e-14)
    np.testing.assert_allclose(y[0, :, 1, 0], [1.0, 0.75, 0.375], rtol=1e-14)


def test_relu_with_leak() -> None:
    x = np.array([-2.0, -0.5, 0.0, 3.0]).reshape(1, 4, 1, 1)
    np.testing.assert_array_equal(relu(x, ReLUSpec(0.2)).ravel(), [-0.4, -0.1, 0.0, 3.0])
    np.testing.assert_array_equal(relu(x, ReLUSpec(0.0)).ravel(), [0.0, 0.0, 0.0, 3.0])


# ---------------------------------------------------------------- LRN

@pytest.mark.parametrize("depth", [1, 2, 4, 5, 12])
def test_lrn_matches_loop_including_channel_edges(depth: int) -> None:
    x = RNG.normal(size=(3, 2, 6, 2))
    spec = LRNSpec(depth, 1.5, 0.3, 0.75)
    np.testing.assert_allclose(lrn(x, spec), loop_lrn(x, depth, 1.5, 0.3, 0.75), rtol=1e-13)


def test_lrn_even_window_reaches_further_up() -> None:
    """N = 2: window [k, k+1]: the last channel sees only itself, the first sees 0 and 1."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
    y = lrn(x, LRNSpec(2, 0.0, 1.0, 0.5)).ravel()
    np.testing.assert_allclose(y, [1 / math.sqrt(5), 2 / math.sqrt(13), 1.0], rtol=1e-15)


def test_lrn_fastap_head_is_exact_l2_normalisation() -> None:
    """``dagnn.LRN`` with param [2D 0 1 0.5] (get_model.m's L2norm layer)."""
    D = 7
    x = RNG.normal(size=(1, 1, D, 4))
    y = lrn(x, LRNSpec(2 * D, 0.0, 1.0, 0.5))
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=2, keepdims=True), rtol=1e-14)


# ---------------------------------------------------------------- shape layers

def test_flatten_is_column_major() -> None:
    x = np.reshape(np.arange(12.0), (2, 2, 3, 1), order="F")  # MATLAB reshape(0:11, 2, 2, 3)
    y = flatten(x, FlattenSpec(3))
    assert y.shape == (1, 1, 12, 1)
    np.testing.assert_array_equal(y.ravel(), np.arange(12.0))
    y1 = flatten(np.stack([x[..., 0], x[..., 0] + 100], axis=3), FlattenSpec(1))
    assert y1.shape == (12, 1, 1, 2)
    np.testing.assert_array_equal(y1[:, 0, 0, 1], np.arange(12.0) + 100)


def test_permute_follows_matlab_order() -> None:
    x = RNG.normal(size=(2, 3, 4, 5))
    y = permute(x, PermuteSpec((2, 1, 3, 4)))
    assert y.shape == (3, 2, 4, 5)
    assert y[2, 1, 3, 4] == x[1, 2, 3, 4]


def test_softmax_over_channels() -> None:
    x = np.array([0.0, math.log(3.0)]).reshape(1, 1, 2, 1) + 1000.0  # exp overflows unshifted
    # 1000 + log(3) is stored to ~1e-13 absolute, which bounds the agreement
    np.testing.assert_allclose(softmax(x, SoftMaxSpec()).ravel(), [0.25, 0.75], rtol=1e-12)


def test_sum_and_concat() -> None:
    a, b = RNG.normal(size=(2, 3, 4, 1)), RNG.normal(size=(2, 3, 4, 1))
    np.testing.assert_array_equal(sum_layer([a, b, a], SumSpec()), a + b + a)
    assert concat([a, b], ConcatSpec(3)).shape == (2, 3, 8, 1)
    np.testing.assert_array_equal(concat([a, b], ConcatSpec(3))[:, :, 4:], b)
    assert concat([a, b], ConcatSpec(1)).shape == (4, 3, 4, 1)
    with pytest.raises(MatConvNetError, match="different sizes"):
        sum_layer([a, a[:1]], SumSpec())
    with pytest.raises(MatConvNetError, match="do not match"):
        concat([a, a[:1]], ConcatSpec(3))
