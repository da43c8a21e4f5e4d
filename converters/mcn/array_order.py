"""The one place arrays change between MATLAB order and PyTorch order.

Two kinds, one converter each:

* activations: MatConvNet holds H x W x C x N (column-major, trailing singleton dimensions
  dropped by MATLAB); PyTorch holds N x C x H x W;
* filters: MatConvNet holds kh x kw x Cin x Cout (``dagnn.Conv``) or kh x kw x K x D
  (``dagnn.ConvTranspose``); PyTorch's ``conv2d`` wants Cout x Cin x kh x kw and
  ``conv_transpose2d`` wants D x K x kh x kw. Both are ``transpose(3, 2, 0, 1)``.

Every function takes a numpy array or a torch tensor and returns the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# MATLAB dimension (0-based: H, W, C, N) -> PyTorch dimension (N, C, H, W)
MATLAB_TO_TORCH_DIM = (2, 3, 1, 0)


def _permute(x: ArrayT, axes: tuple[int, ...]) -> ArrayT:
    """``x`` with its axes reordered (numpy ``transpose`` / torch ``permute``)."""
    if isinstance(x, torch.Tensor):
        return x.permute(*axes)
    return np.transpose(x, axes)


def _reshape(x: ArrayT, shape: tuple[int, ...]) -> ArrayT:
    """``x`` reshaped in row-major order."""
    return x.reshape(shape)


def as_4d(x: ArrayT) -> ArrayT:
    """A MATLAB-order activation padded with the trailing singleton dims MATLAB drops."""
    if x.ndim > 4:
        raise ValueError(f"expected at most 4 dims (H x W x C x N), got shape {tuple(x.shape)}")
    return _reshape(x, tuple(x.shape) + (1,) * (4 - x.ndim))


def matlab_to_torch(x: ArrayT) -> ArrayT:
    """An activation in MATLAB order (H x W x C x N, up to 4 dims) as N x C x H x W."""
    return _permute(as_4d(x), (3, 2, 0, 1))


def torch_to_matlab(x: ArrayT) -> ArrayT:
    """An activation in PyTorch order (N x C x H x W) in MATLAB order H x W x C x N."""
    if x.ndim != 4:
        raise ValueError(f"expected N x C x H x W, got shape {tuple(x.shape)}")
    return _permute(x, (2, 3, 1, 0))


def filter_to_torch(f: ArrayT) -> ArrayT:
    """A 4-D MatConvNet filter bank (kh x kw x A x B) as PyTorch's B x A x kh x kw weight."""
    if f.ndim != 4:
        raise ValueError(f"expected a 4-D filter bank, got shape {tuple(f.shape)}")
    return _permute(f, (3, 2, 0, 1))


def reshape_column_major(x: ArrayT, shape: tuple[int, ...]) -> ArrayT:
    """MATLAB's ``reshape(x, shape)``: element order is column-major (first index fastest).

    Reversing the axes turns a column-major array into a row-major one of the reversed
    shape, so the row-major reshape happens between two reversals.
    """
    rev = tuple(range(x.ndim - 1, -1, -1))
    flipped = _reshape(_permute(x, rev), tuple(reversed(shape)))
    return _permute(flipped, tuple(range(len(shape) - 1, -1, -1)))
