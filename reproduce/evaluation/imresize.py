"""Image resizing as MATLAB's ``imresize`` and as MatConvNet's ``vl_imreadjpeg`` do it.

Two kernels (:data:`KERNELS`), the same in both libraries: ``"bicubic"``, the cubic
convolution kernel with a = -0.5 (``1.5|x|^3 - 2.5|x|^2 + 1`` for |x| <= 1,
``-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2`` for 1 < |x| <= 2, else 0), width 4; and
``"bilinear"``, the triangle ``max(0, 1 - |x|)``, width 2.

``imresize(im, [h w])`` (bicubic, antialiasing on: MATLAB's defaults; ``method="bilinear"``
for ``imresize(..., 'bilinear')``), written from its documented algorithm:

- when shrinking (scale < 1) with antialiasing the kernel is stretched:
  ``h(x) = scale * kernel(scale * x)`` with width ``width / scale``;
- output pixel x (1-based) maps to input coordinate ``u = x / scale + 0.5 * (1 - 1 / scale)``;
  the taps are ``floor(u - width / 2) + (0 .. ceil(width) + 1)``;
- weights are normalised to sum to one per output pixel;
- out-of-range taps are mirrored (symmetric padding: index sequence 1..n, n..1 repeated);
- separable: one dimension at a time, the dimension with the smaller scale first (rows first
  on a tie); for uint8 input each pass rounds and saturates to uint8 (MATLAB's ``imresizemex``
  returns the class of its input), so the intermediate image is uint8 too.

We sum in double with a dense weight matrix; MATLAB sums the same terms in tap order, so a
value can differ in the last bits of a double, which can move a uint8 result by one only
when it lies within ~1e-12 of a .5 boundary.

``vl_imreadjpeg_resize`` is the resize inside MatConvNet's ``vl_imreadjpeg`` (used by the
authors' ``batch_imagenet.m`` for the 224x224 network input), read from MatConvNet's
``imread_helpers.hpp`` (``ImageResizeFilter``): single precision, the kernel chosen by
``'Interpolation'`` (``vl_imreadjpeg``'s own default is ``bilinear``; the authors' batch
function passed ``bicubic``), ``u = alpha * v + beta`` with ``alpha = in / out``,
``beta = 0.5 * (alpha - 1)`` (0-based), kernel support (4 for bicubic, 2 for bilinear)
stretched by ``alpha`` when shrinking, with ``delta = (u - k) / alpha`` (so both kernels *do*
antialias, like ``imresize``; the stretched kernel is not scaled, the normalisation makes
that irrelevant), taps from ``ceil(u - support / 2)``, borders *replicated* (not mirrored),
weights normalised, taps after the first zero weight ignored, rows (height) first, then
columns, no rounding (float output). With its default crop options ``vl_imreadjpeg`` first
takes the largest centred region with the output's aspect ratio (``vl_imreadjpeg.cu``,
``Batch::prefetch``): the whole image for the square 256x256 inputs of the authors, a centre
crop otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from reproduce.errors import InputError


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (Keys, a = -0.5), evaluated in the dtype of ``x``."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    one = ax.dtype.type(1)
    two = ax.dtype.type(2)
    inner = ax.dtype.type(1.5) * ax3 - ax.dtype.type(2.5) * ax2 + one
    outer = ax.dtype.type(-0.5) * ax3 + ax.dtype.type(2.5) * ax2 - ax.dtype.type(4) * ax + two
    return np.where(ax <= one, inner, np.where(ax <= two, outer, ax.dtype.type(0)))


def triangle(x: np.ndarray) -> np.ndarray:
    """The bilinear kernel ``max(0, 1 - |x|)``, evaluated in the dtype of ``x``."""
    ax = np.abs(x)
    return np.maximum(ax.dtype.type(0), ax.dtype.type(1) - ax)


KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "bicubic": (cubic, 4),
    "bilinear": (triangle, 2),
}
"""Interpolation name -> (kernel, width in pixels at scale 1): MATLAB's and MatConvNet's."""


def _kernel(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """The kernel and width of interpolation ``name``, or an ``InputError`` listing them."""
    if name not in KERNELS:
        raise InputError(f"unknown interpolation {name!r}; choose one of {sorted(KERNELS)}")
    return KERNELS[name]


def imresize_contributions(in_length: int, out_length: int, scale: float | None = None,
                           antialias: bool = True, method: str = "bicubic"
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices per output pixel, as MATLAB's ``contributions``.

    ``scale`` defaults to ``out_length / in_length``. Returns ``(weights, indices)`` of shape
    ``(out_length, P)`` with ``P = ceil(kernel_width) + 2``; mirrored indices; rows sum to 1.
    """
    if in_length < 1 or out_length < 1:
        raise InputError(f"imresize: lengths must be positive, got {in_length} -> {out_length}")
    kernel, kernel_width = _kernel(method)
    if scale is None:
        scale = out_length / in_length
    width = float(kernel_width)
    stretch = scale < 1 and antialias
    if stretch:
        width = width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    P = int(np.ceil(width)) + 2
    ind = left[:, None] + np.arange(P, dtype=np.float64)[None, :]
    dist = u[:, None] - ind
    weights = scale * kernel(scale * dist) if stretch else kernel(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = aux[np.mod(ind.astype(np.int64) - 1, 2 * in_length)]
    return weights, indices


def _weight_matrix(weights: np.ndarray, indices: np.ndarray, in_length: int) -> np.ndarray:
    """Dense out x in matrix with each output row's weights added at its input indices."""
    M = np.zeros((weights.shape[0], in_length), dtype=weights.dtype)
    rows = np.repeat(np.arange(weights.shape[0]), weights.shape[1])
    np.add.at(M, (rows, indices.ravel()), weights.ravel())
    return M


@lru_cache(maxsize=64)
def _imresize_matrix(in_length: int, out_length: int, scale: float,
                     antialias: bool, method: str) -> np.ndarray:
    """Cached dense imresize weight matrix (read-only)."""
    w, idx = imresize_contributions(in_length, out_length, scale, antialias, method)
    M = _weight_matrix(w, idx, in_length)
    M.flags.writeable = False
    return M


def _apply_along(image: np.ndarray, M: np.ndarray, axis: int) -> np.ndarray:
    """``M`` (out x in) applied along ``axis`` of ``image``."""
    moved = np.moveaxis(image, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = (M @ flat).reshape((M.shape[0],) + moved.shape[1:])
    return np.moveaxis(out, 0, axis)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8: round half away from zero, saturate to 0..255."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def imresize(image: np.ndarray, output_size: tuple[int, int], antialias: bool = True,
             method: str = "bicubic") -> np.ndarray:
    """``imresize(image, [rows cols], method)`` (H x W or H x W x C), bicubic by default.

    uint8 in, uint8 out (rounded after each pass, as MATLAB); float in, float64 out.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(f"imresize: expected H x W or H x W x C, got shape {image.shape}")
    out_rows, out_cols = (int(output_size[0]), int(output_size[1]))
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"imresize: uint8 or floating-point image expected, got {image.dtype}")
    scales = (out_rows / image.shape[0], out_cols / image.shape[1])
    order = sorted(range(2), key=lambda d: scales[d])  # stable: rows first on a tie
    out: np.ndarray = image
    for dim in order:
        in_len = out.shape[dim]
        out_len = (out_rows, out_cols)[dim]
        M = _imresize_matrix(in_len, out_len, scales[dim], antialias, method)
        out = _apply_along(out.astype(np.float64), M, dim)
        if is_uint8:
            out = _to_uint8(out)
    return out


@lru_cache(maxsize=64)
def vl_imreadjpeg_filter(in_length: int, out_length: int, crop_length: int | None = None,
                         crop_offset: int = 0, interpolation: str = "bicubic") -> np.ndarray:
    """The out x in float32 weight matrix of MatConvNet's ``ImageResizeFilter`` for
    ``interpolation`` (``"bicubic"`` or ``"bilinear"``; cached; read-only): ``crop_length``
    input pixels from ``crop_offset`` (default: all) mapped onto ``out_length``; borders
    replicate the ends of the whole input."""
    kernel, width = _kernel(interpolation)
    f32 = np.float32
    crop = in_length if crop_length is None else crop_length
    alpha = f32(crop) / f32(out_length)
    beta = f32(0.5) * (alpha - f32(1)) + f32(crop_offset)
    support = f32(width)
    size = width
    if alpha > 1:
        support = support * alpha
        size = int(np.ceil(support))
    M = np.zeros((out_length, in_length), dtype=f32)
    for v in range(out_length):
        u = alpha * f32(v) + beta
        start = int(np.ceil(u - support / f32(2)))
        k = start + np.arange(size)
        delta = (u - k.astype(f32)).astype(f32)
        if alpha > 1:
            delta = (delta / alpha).astype(f32)
        h = kernel(delta).astype(f32)
        slots = np.zeros(size, dtype=f32)
        q = np.arange(size)
        q = np.where(k < 0, q - k, q)
        q = np.where(k >= in_length, q - (k - in_length + 1), q)
        np.add.at(slots, q, h)
        mass = f32(h.sum(dtype=f32))
        nonzero = np.nonzero(h)[0]
        skip = int(q[nonzero].min()) if len(nonzero) else size
        taps = slots[skip:] / mass
        zero = np.nonzero(taps == 0)[0]
        if len(zero):  # the C loop stops at the first zero weight
            taps = taps[:zero[0]]
        cols = start + skip + np.arange(len(taps))
        M[v, cols] = taps
    M.flags.writeable = False
    return M


def vl_imreadjpeg_crop(in_size: tuple[int, int], output_size: tuple[int, int]
                       ) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((crop_h, crop_w), (offset_y, offset_x))`` that ``vl_imreadjpeg`` resizes for
    ``'Resize', [h w]`` with its default ``CropSize`` 1, ``CropAnisotropy`` 1 and
    ``CropLocation`` center: the largest centred region with the aspect ratio of the output
    (the whole image when the aspect ratios agree)."""
    in_h, in_w = in_size
    out_h, out_w = output_size
    scale = min(in_w / out_w, in_h / out_h)
    crop_w = min(int(np.floor(out_w * scale + 0.5)), in_w)  # C round(): half away from zero
    crop_h = min(int(np.floor(out_h * scale + 0.5)), in_h)
    return (crop_h, crop_w), ((in_h - crop_h) // 2, (in_w - crop_w) // 2)


def vl_imreadjpeg_resize(image: np.ndarray, output_size: tuple[int, int],
                         interpolation: str = "bicubic") -> np.ndarray:
    """``vl_imreadjpeg(..., 'Resize', [h w], 'Interpolation', interpolation)`` on an H x W or
    H x W x C image (any numeric type; returned H x W x C float32, not rounded; a greyscale
    image keeps its one channel). An image whose aspect ratio differs from the output's is
    centre-cropped first, as ``vl_imreadjpeg`` does (:func:`vl_imreadjpeg_crop`)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise InputError(f"vl_imreadjpeg resize: expected H x W x C, got shape {image.shape}")
    x = image.astype(np.float32)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    (crop_h, crop_w), (off_y, off_x) = vl_imreadjpeg_crop((x.shape[0], x.shape[1]),
                                                          (out_h, out_w))
    rows = vl_imreadjpeg_filter(x.shape[0], out_h, crop_h, off_y, interpolation)
    x = _apply_along(x, rows, 0)
    cols = vl_imreadjpeg_filter(x.shape[1], out_w, crop_w, off_x, interpolation)
    return _apply_along(x, cols, 1).astype(np.float32)
