"""Numpy kernels with MatConvNet's forward semantics, one per layer type.

Activations are MATLAB-order 4-D arrays H x W x C x N in the caller's dtype; specs come from
:mod:`converters.mcn.layer_specs`. The formulas follow MatConvNet 1.0-beta25's CPU code
(``matlab/src/bits/impl/*_cpu.cpp``): cross-correlation with pad [top bottom left right],
stride [sy sx], dilation and ``floor`` output sizes; pooling windows clipped to the input;
batch normalisation from stored moments without epsilon; exact LRN. One deliberate
difference: MatConvNet's CPU LRN uses an approximate power (~0.2% error in the norm), its
GPU path is exact, and so is this kernel.

Convolutions gather the kh*kw shifted views into an im2col matrix and do one matmul per
group; pooling reduces over the kh*kw shifted views. No per-pixel Python loops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from converters.errors import MatConvNetError
from converters.mcn.array_order import reshape_column_major
from converters.mcn.layer_specs import (
    BatchNormSpec,
    ConcatSpec,
    ConvSpec,
    ConvTransposeSpec,
    DropOutSpec,
    FlattenSpec,
    LayerSpec,
    LRNSpec,
    PermuteSpec,
    PoolingSpec,
    ReLUSpec,
    SoftMaxSpec,
    SumSpec,
)


def output_size(size: int, pad_before: int, pad_after: int, extent: int, stride: int) -> int:
    """MatConvNet's output length ``floor((size + pads - extent) / stride) + 1`` (may be < 1)."""
    return (size + pad_before + pad_after - extent) // stride + 1


def _shifted_views(xp: np.ndarray, taps: tuple[int, int], step: tuple[int, int],
                   stride: tuple[int, int], out: tuple[int, int]) -> list[np.ndarray]:
    """The kh*kw views ``xp[i*dy + sy*u, j*dx + sx*v]`` of an N x H x W x C array, tap-major."""
    (kh, kw), (dy, dx), (sy, sx), (ho, wo) = taps, step, stride, out
    return [xp[:, i * dy: i * dy + sy * (ho - 1) + 1: sy, j * dx: j * dx + sx * (wo - 1) + 1: sx]
            for i in range(kh) for j in range(kw)]


def _pad_nhwc(x: np.ndarray, pad: tuple[int, int, int, int], value: float) -> np.ndarray:
    """N x H x W x C array padded [top bottom left right] with ``value``."""
    top, bottom, left, right = pad
    if not any(pad):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _check_size(name: str, out: tuple[int, int], x_shape: tuple[int, ...]) -> None:
    """Refuse an empty output the way vl_nnconv/vl_nnpool do."""
    if min(out) < 1:
        raise MatConvNetError(f"{name}: input of size {list(x_shape)} gives an empty output "
                              f"{list(out)}")


def conv(x: np.ndarray, spec: ConvSpec, name: str = "conv") -> np.ndarray:
    """``vl_nnconv``, cross-correlation (no flip), per group.

    y(u,v,k) = b(k) + sum_{i,j,c} F(i,j,c,k) x(u*sy + i*dy - pt, v*sx + j*dx - pl, c).
    """
    kh, kw, cin_g, cout = spec.filters.shape
    height, width, cin, batch = x.shape
    if cin % cin_g:
        raise MatConvNetError(f"{name}: input has {cin} channels, not a multiple of the filter "
                              f"depth {cin_g}")
    groups = cin // cin_g
    if cout % groups:
        raise MatConvNetError(f"{name}: {cout} filters cannot be split into {groups} groups")
    (pt, pb, pl, pr), (sy, sx), (dy, dx) = spec.pad, spec.stride, spec.dilate
    out = (output_size(height, pt, pb, dy * (kh - 1) + 1, sy),
           output_size(width, pl, pr, dx * (kw - 1) + 1, sx))
    _check_size(name, out, x.shape)
    xp = _pad_nhwc(np.transpose(x, (3, 0, 1, 2)), spec.pad, 0.0)
    filters = spec.filters.astype(x.dtype, copy=False)
    cout_g = cout // groups
    y = np.empty((batch, out[0], out[1], cout), dtype=x.dtype)
    for g in range(groups):
        views = _shifted_views(xp[..., g * cin_g:(g + 1) * cin_g], (kh, kw), (dy, dx), (sy, sx),
                               out)
        cols = views[0] if len(views) == 1 else np.stack(views, axis=3)
        cols = cols.reshape(batch * out[0] * out[1], kh * kw * cin_g)
        weights = filters[..., g * cout_g:(g + 1) * cout_g].reshape(kh * kw * cin_g, cout_g)
        y[..., g * cout_g:(g + 1) * cout_g] = (cols @ weights).reshape(batch, *out, cout_g)
    if spec.bias is not None:
        y += spec.bias.astype(x.dtype, copy=False)
    return np.transpose(y, (1, 2, 3, 0))


def conv_transpose(x: np.ndarray, spec: ConvTransposeSpec, name: str = "convt") -> np.ndarray:
    """``vl_nnconvt``: the adjoint of ``vl_nnconv`` with stride = upsample and pad = crop.

    Filters are FH x FW x K x D with D = input channels split into ``groups``; group g reads
    input channels g*D/G.. and writes output channels g*K..: y(up*u + i - ct, up*v + j - cl,
    g*K + k) += F(i, j, k, d) x(u, v, d).
    """
    fh, fw, k_out, depth = spec.filters.shape
    height, width, cin, batch = x.shape
    if cin != depth:
        raise MatConvNetError(f"{name}: input has {cin} channels, the filters expect {depth}")
    groups, (uy, ux), (ct, cb, cl, cr) = spec.groups, spec.upsample, spec.crop
    full = (uy * (height - 1) + fh, ux * (width - 1) + fw)
    _check_size(name, (full[0] - ct - cb, full[1] - cl - cr), x.shape)
    xn = np.transpose(x, (3, 0, 1, 2)).reshape(batch * height * width, cin)
    filters = spec.filters.astype(x.dtype, copy=False)
    d_g = depth // groups
    y = np.zeros((batch, full[0], full[1], k_out * groups), dtype=x.dtype)
    for g in range(groups):
        weights = np.transpose(filters[..., g * d_g:(g + 1) * d_g], (3, 0, 1, 2))
        cols = xn[:, g * d_g:(g + 1) * d_g] @ weights.reshape(d_g, fh * fw * k_out)
        cols = cols.reshape(batch, height, width, fh, fw, k_out)
        for i in range(fh):
            for j in range(fw):
                y[:, i: i + uy * (height - 1) + 1: uy, j: j + ux * (width - 1) + 1: ux,
                  g * k_out:(g + 1) * k_out] += cols[:, :, :, i, j]
    y = y[:, ct: full[0] - cb, cl: full[1] - cr]
    if spec.bias is not None:
        y = y + spec.bias.astype(x.dtype, copy=False)
    return np.ascontiguousarray(np.transpose(y, (1, 2, 3, 0)))


def pooling(x: np.ndarray, spec: PoolingSpec, name: str = "pool") -> np.ndarray:
    """``vl_nnpool``: max or average over windows clipped to the input.

    Max pads with -inf; avg sums the in-bounds cells and divides by their count (what
    ``pooling_cpu.cpp`` does by clipping the window). MatConvNet's cuDNN path declines
    average pooling with padding and any asymmetric padding (``nnpooling_cudnn.cu``), so
    the clipped count holds on the GPU too.
    """
    height, width, _, _ = x.shape
    (kh, kw), (pt, pb, pl, pr), stride = spec.pool_size, spec.pad, spec.stride
    out = (output_size(height, pt, pb, kh, stride[0]), output_size(width, pl, pr, kw, stride[1]))
    _check_size(name, out, x.shape)
    xn = np.transpose(x, (3, 0, 1, 2))
    if spec.method == "max":
        views = _shifted_views(_pad_nhwc(xn, spec.pad, -np.inf), (kh, kw), (1, 1), stride, out)
        y = views[0].copy()
        for view in views[1:]:
            np.maximum(y, view, out=y)
    else:
        views = _shifted_views(_pad_nhwc(xn, spec.pad, 0.0), (kh, kw), (1, 1), stride, out)
        ones = np.ones((1, height, width, 1), dtype=x.dtype)
        counts = _shifted_views(_pad_nhwc(ones, spec.pad, 0.0), (kh, kw), (1, 1), stride, out)
        y = np.sum(views, axis=0) / np.sum(counts, axis=0)
    return np.transpose(y, (1, 2, 3, 0))


def batch_norm(x: np.ndarray, spec: BatchNormSpec, name: str = "bnorm") -> np.ndarray:
    """``vl_nnbnorm`` given moments: ``mult / sigma * (x - mu) + bias``, no epsilon.

    ``bnorm_cpu.cpp`` takes no epsilon on this path; the cuDNN path passes ``sigma^2 - eps``
    as the variance together with ``eps``, which gives back the same sigma.
    """
    if x.shape[2] != spec.mult.size:
        raise MatConvNetError(f"{name}: input has {x.shape[2]} channels, the layer "
                              f"{spec.mult.size}")
    mult, bias, mu, sigma = (v.astype(x.dtype, copy=False).reshape(1, 1, -1, 1)
                             for v in (spec.mult, spec.bias, spec.mu, spec.sigma))
    return mult / sigma * (x - mu) + bias


def relu(x: np.ndarray, spec: ReLUSpec, name: str = "relu") -> np.ndarray:
    """``vl_nnrelu``: ``x`` where positive, ``leak * x`` elsewhere."""
    if spec.leak == 0:
        return np.maximum(x, 0)
    return np.where(x > 0, x, x * x.dtype.type(spec.leak))


def lrn_window_sum(sq: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
    """Sum over ``[k - before, k + after]`` clipped to ``axis`` of ``sq``, for every k."""
    channels = sq.shape[axis]
    if before >= channels - 1 and after >= channels - 1:
        return np.broadcast_to(sq.sum(axis=axis, keepdims=True), sq.shape)
    total = np.zeros_like(sq)
    for offset in range(-min(before, channels - 1), min(after, channels - 1) + 1):
        dst = [slice(None)] * sq.ndim
        src = [slice(None)] * sq.ndim
        dst[axis] = slice(max(0, -offset), channels - max(0, offset))
        src[axis] = slice(max(0, offset), channels - max(0, -offset))
        total[tuple(dst)] += sq[tuple(src)]
    return total


def lrn(x: np.ndarray, spec: LRNSpec, name: str = "lrn") -> np.ndarray:
    """``vl_nnnormalize``: ``x_k (kappa + alpha sum_{G(k)} x_q^2)^(-beta)``, exact power."""
    window = lrn_window_sum(x * x, spec.before, spec.after, axis=2)
    dtype = x.dtype.type
    return x * (dtype(spec.kappa) + dtype(spec.alpha) * window) ** dtype(-spec.beta)


def softmax(x: np.ndarray, spec: SoftMaxSpec, name: str = "softmax") -> np.ndarray:
    """``vl_nnsoftmax``: softmax over the channel dimension."""
    e = np.exp(x - x.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def permute(x: np.ndarray, spec: PermuteSpec, name: str = "permute") -> np.ndarray:
    """MATLAB ``permute(x, order)``."""
    return np.transpose(x, [d - 1 for d in spec.order])


def flatten(x: np.ndarray, spec: FlattenSpec, name: str = "flatten") -> np.ndarray:
    """``vl_nnflatten``: column-major reshape to H*W*C values on ``axis``, batch kept."""
    shape = [1, 1, 1, x.shape[3]]
    shape[spec.axis - 1] = x.shape[0] * x.shape[1] * x.shape[2]
    return reshape_column_major(x, tuple(shape))


def dropout(x: np.ndarray, spec: DropOutSpec, name: str = "dropout") -> np.ndarray:
    """``dagnn.DropOut`` in test mode: the identity."""
    return x


UNARY: dict[type, Callable[[np.ndarray, LayerSpec, str], np.ndarray]] = {
    ConvSpec: conv,  # type: ignore[dict-item]
    ConvTransposeSpec: conv_transpose,  # type: ignore[dict-item]
    PoolingSpec: pooling,  # type: ignore[dict-item]
    BatchNormSpec: batch_norm,  # type: ignore[dict-item]
    ReLUSpec: relu,  # type: ignore[dict-item]
    LRNSpec: lrn,  # type: ignore[dict-item]
    SoftMaxSpec: softmax,  # type: ignore[dict-item]
    PermuteSpec: permute,  # type: ignore[dict-item]
    FlattenSpec: flatten,  # type: ignore[dict-item]
    DropOutSpec: dropout,  # type: ignore[dict-item]
}


def sum_layer(xs: list[np.ndarray], spec: SumSpec, name: str = "sum") -> np.ndarray:
    """``dagnn.Sum``: elementwise sum of the inputs (same shapes)."""
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise MatConvNetError(f"{name}: inputs of different sizes {sorted(shapes)}")
    total = xs[0].copy()
    for x in xs[1:]:
        total += x
    return total


def concat(xs: list[np.ndarray], spec: ConcatSpec, name: str = "concat") -> np.ndarray:
    """``dagnn.Concat``: ``cat(dim, inputs{:})`` (dim 3 = channels)."""
    axis = spec.dim - 1
    rest = {tuple(s for i, s in enumerate(x.shape) if i != axis) for x in xs}
    if len(rest) != 1:
        raise MatConvNetError(f"{name}: inputs of sizes {[list(x.shape) for x in xs]} do not "
                              f"match outside dim {spec.dim}")
    return np.concatenate(xs, axis=axis)


def run_layer(spec: LayerSpec, xs: list[np.ndarray], name: str) -> np.ndarray:
    """Apply one layer to its inputs (MATLAB-order 4-D arrays)."""
    if isinstance(spec, SumSpec):
        return sum_layer(xs, spec, name)
    if isinstance(spec, ConcatSpec):
        return concat(xs, spec, name)
    return UNARY[type(spec)](xs[0], spec, name)
