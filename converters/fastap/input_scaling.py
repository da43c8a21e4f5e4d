"""Which input scaling a checkpoint was trained with, read from its first BatchNorm's moments.

The first BatchNorm layer (``features_1`` / ``bn_conv1``) stores running statistics
``[mu sigma]`` of the first convolution's output under the training input
(docs/pipeline.md, section 4). Running that convolution on images preprocessed each
candidate way and comparing the per-channel mean and standard deviation of its output with
the stored moments scores each candidate; the lowest score fits best. Candidates:

- ``matlab``: pixels on the 0-255 scale minus ``averageImage`` as stored (section 4);
- ``torchvision``: ``(pixels / 255 - mean) / std`` with the ImageNet mean/std;
- ``matlab_mean_x255`` (only when ``averageImage`` is on the 0-1 scale): 0-255 pixels minus
  ``255 * averageImage``, the Caffe-style reading of a 0-1 mean.

Score per candidate: median over channels of ``|log(std_hat / sigma)|`` plus median of
``|mean_hat - mu| / sigma`` (``std_hat = sqrt(var_hat + 1e-5)``, as the importers stored sigma).
A scale mismatch of 255 adds ``log(255) = 5.5``; the right scaling stays near 0 up to the
difference between the checked images and the training set.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual spelling)

from converters.errors import MatConvNetError
from converters.matio.values import to_floats
from converters.mcn.array_order import filter_to_torch
from converters.mcn.net import McnLayer, McnNet

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff")
BN_EPSILON = 1e-5  # what both importers added before storing sigma


def first_conv_and_bn(net: McnNet) -> tuple[McnLayer, McnLayer]:
    """The first ``dagnn.Conv`` layer and the ``dagnn.BatchNorm`` reading its output."""
    where = net.source or "network"
    conv = next((la for la in net.layers if la.type == "dagnn.Conv"), None)
    if conv is None:
        raise MatConvNetError(f"{where}: no dagnn.Conv layer to check the input scaling with")
    bn = next((la for la in net.layers
               if la.type == "dagnn.BatchNorm" and la.inputs == conv.outputs), None)
    if bn is None:
        raise MatConvNetError(f"{where}: no dagnn.BatchNorm layer reads the output of the first "
                              f"convolution {conv.name!r}; the input scaling cannot be checked")
    return conv, bn


def read_images(folder: str | os.PathLike[str], *, limit: int = 64) -> list[np.ndarray]:
    """Up to ``limit`` images (H x W x 3 uint8 RGB) from ``folder``, in sorted name order."""
    from PIL import Image  # torchvision's dependency; needed only here

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise MatConvNetError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
        except OSError as exc:
            raise MatConvNetError(f"{path}: cannot read the image ({exc})") from exc
    return images


def _resized(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Images as an N x 3 x H x W float64 batch on the 0-255 scale, bicubic-resized to ``size``.

    MATLAB's imresize (bicubic, antialiased) is approximated by torch's antialiased bicubic;
    the moments compared here do not depend on the last bit of the resize.
    """
    batch = []
    for index, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise MatConvNetError(f"image {index}: expected H x W x 3, got shape {array.shape}")
        x = torch.from_numpy(array.astype(np.float64)).permute(2, 0, 1)[None]
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        batch.append(x.clamp(0, 255))
    return torch.cat(batch)


def candidate_inputs(pixels: torch.Tensor, average_image: np.ndarray | None
                     ) -> dict[str, torch.Tensor]:
    """The network input under each candidate preprocessing (N x 3 x H x W, float64)."""
    candidates: dict[str, torch.Tensor] = {}
    if average_image is not None:
        average = np.asarray(average_image, dtype=np.float64)
        mean = torch.from_numpy(average.reshape(3, 1, 1) if average.size == 3
                                else average.transpose(2, 0, 1).copy())
        candidates["matlab"] = pixels - mean
        if float(np.max(np.abs(average))) <= 1.0:
            candidates["matlab_mean_x255"] = pixels - 255.0 * mean
    mean = torch.from_numpy(IMAGENET_MEAN.reshape(3, 1, 1))
    std = torch.from_numpy(IMAGENET_STD.reshape(3, 1, 1))
    candidates["torchvision"] = (pixels / 255.0 - mean) / std
    return candidates


def _conv(net: McnNet, conv: McnLayer, x: torch.Tensor) -> torch.Tensor:
    """The first convolution on ``x`` (float64), with its stored stride, padding and bias."""
    weight = np.asarray(net.params[conv.params[0]].value, dtype=np.float64)
    if weight.ndim == 3:  # MATLAB drops a trailing singleton Cout
        weight = weight[..., None]
    pad = [int(v) for v in to_floats(conv.block.get("pad", [0.0]))]
    pad = pad * 4 if len(pad) == 1 else pad
    stride = [int(v) for v in to_floats(conv.block.get("stride", [1.0]))]
    stride = stride * 2 if len(stride) == 1 else stride
    x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))  # MATLAB [top bottom left right]
    # dagnn.Conv ignores its second param when hasBias is false; an empty one is "no bias"
    flag = conv.block.get("hasBias")
    has_bias = flag is None or np.size(flag) == 0 or bool(to_floats(flag)[0])
    bias = None
    if has_bias and len(conv.params) > 1:
        value = np.asarray(net.params[conv.params[1]].value, dtype=np.float64).ravel(order="F")
        bias = torch.from_numpy(value) if value.size else None
    return F.conv2d(x, torch.from_numpy(np.ascontiguousarray(filter_to_torch(weight))),
                    bias, stride=tuple(stride))


def check_input_scaling(net: McnNet, images: Sequence[np.ndarray], *,
                        average_image: np.ndarray | None = None,
                        size: tuple[int, int] = (224, 224)) -> dict[str, Any]:
    """Score each candidate input scaling against the first BatchNorm's moments.

    ``images`` are H x W x 3 RGB arrays (uint8, or float on the 0-255 scale);
    ``average_image`` defaults to ``meta.normalization.averageImage``. Returns a JSON-able
    dict: ``best`` (the candidate with the lowest score), ``margin`` (next score minus best),
    and per candidate the score, median sigma ratio and median mean error in sigmas.
    """
    if not images:
        raise MatConvNetError("no images given for the input scaling check")
    conv, bn = first_conv_and_bn(net)
    if average_image is None:
        norm = (net.meta or {}).get("normalization") or {}
        if isinstance(norm, dict) and "averageImage" in norm:
            average_image = np.asarray(norm["averageImage"], dtype=np.float64)
    # vl_nnbnorm reads the moments' memory as [mu(1..C) sigma(1..C)]: column-major C x 2
    moments = np.asarray(net.params[bn.params[2]].value, dtype=np.float64).reshape(
        -1, 2, order="F")
    mu, sigma = moments[:, 0], moments[:, 1]
    pixels = _resized(images, size)
    results: dict[str, dict[str, float]] = {}
    for name, x in candidate_inputs(pixels, average_image).items():
        with torch.no_grad():
            y = _conv(net, conv, x)
        mean_hat = y.mean(dim=(0, 2, 3)).numpy()
        std_hat = np.sqrt(y.var(dim=(0, 2, 3), unbiased=False).numpy() + BN_EPSILON)
        log_ratio = np.log(std_hat / sigma)
        mean_err = np.abs(mean_hat - mu) / sigma
        results[name] = {
            "score": float(np.median(np.abs(log_ratio)) + np.median(mean_err)),
            "median_sigma_ratio": float(np.exp(np.median(log_ratio))),
            "median_mean_error_in_sigmas": float(np.median(mean_err)),
        }
    ranked = sorted(results, key=lambda k: results[k]["score"])
    best = ranked[0]
    margin = results[ranked[1]]["score"] - results[best]["score"] if len(ranked) > 1 else math.inf
    log.info("input scaling: best %s (score %.3f, margin %.3f)", best, results[best]["score"],
             margin)
    return {"best": best, "margin": margin, "candidates": results,
            "num_images": len(images), "conv_layer": conv.name, "bn_layer": bn.name,
            "bn_moments": bn.params[2], "size": list(size),
            "method": "per-channel mean/std of the first conv's output vs the first "
                      "BatchNorm's stored [mu sigma]; score = median |log(std/sigma)| + "
                      "median |mean - mu| / sigma; lowest fits"}
