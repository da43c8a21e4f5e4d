"""Named, recorded input preprocessing: the authors' MATLAB pipeline or torchvision's.

``"matlab"`` (docs/pipeline.md section 4; ``batch_imagenet.m`` itself is missing, so this
is a reconstruction, recorded as such):

1. read the image as MATLAB and ``vl_imreadjpeg`` would: RGB uint8, or one grey channel for a
   greyscale file (Pillow modes ``1``/``L``/``LA``; libjpeg's ``JCS_GRAYSCALE``), CMYK
   converted by Pillow;
2. for SOP and VehicleID (and the datasets read with the same convention),
   ``imresize(im, [256 256])`` (MATLAB bicubic with antialiasing, aspect ratio not kept;
   :func:`reproduce.evaluation.imresize.imresize`), then by default a JPEG re-encode at
   quality 75 (MATLAB ``imwrite``'s default; Pillow's libjpeg with its default 4:2:0 chroma
   subsampling, which MATLAB's encoder may not share bit for bit; a grey image stays a
   one-channel JPEG, as ``imwrite`` writes a 2-D array);
3. resize to 224x224 as ``vl_imreadjpeg(..., 'Resize', [224 224], 'Interpolation', interp)``
   does (:func:`reproduce.evaluation.imresize.vl_imreadjpeg_resize`: single precision,
   antialiased when shrinking, replicated borders; a non-square image is centre-cropped to a
   square first, as ``vl_imreadjpeg`` does), because that is the reader the authors' batch
   function used. ``interpolation`` is ``"bicubic"`` (default: what the authors' batch
   function passed) or ``"bilinear"`` (``vl_imreadjpeg``'s own default, and the
   ``interpolation`` recorded in the base networks' ``meta.normalization``).
   ``resize="imresize"`` uses MATLAB ``imresize`` with the same kernel instead;
4. subtract the model's ``averageImage`` (3-vector or 224x224x3 HxWxC, RGB) on the 0-255
   scale, no division by a standard deviation. A grey image becomes three channels here, as
   ``vl_imreadjpeg`` with ``'Pack'`` makes it: the grey channel is replicated and, with a
   3-value mean, ``greyscale_mean="first"`` (default) subtracts the *first* value from all
   three channels, which is what ``vl_imreadjpeg`` does (its grey branch adds only the first
   channel's offset); ``"per-channel"`` subtracts each channel's own value. A 224x224x3 mean
   image is subtracted per channel in both cases (``vl_imreadjpeg`` replicates the grey
   channel before subtracting an average image).

``"torchvision"``: ``Resize(256)`` (bilinear, antialiased), ``CenterCrop(224)``,
``ToTensor()`` (0-1), ``Normalize`` with the ImageNet mean and std (grey images replicated).

Both produce float32 C x H x W tensors and a plain dict (:func:`Preprocessing.record`) that
every output and the embedding cache key store.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reproduce.errors import InputError
from reproduce.evaluation.imresize import imresize, vl_imreadjpeg_resize

NAMES = ("matlab", "torchvision")
RESIZES = ("vl_imreadjpeg", "imresize")
INTERPOLATIONS = ("bicubic", "bilinear")
GREYSCALE_MEANS = ("first", "per-channel")
GREY_MODES = ("1", "L", "LA")
"""Pillow modes read as one grey channel (a greyscale JPEG opens as ``L``)."""
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MATLAB_JPEG_QUALITY = 75


@dataclass(frozen=True)
class Preprocessing:
    """One preprocessing choice; ``__call__(path)`` gives a float32 3 x 224 x 224 tensor.

    ``pre_resize`` is the dataset's one-off resize (``(256, 256)`` or ``None``);
    ``jpeg_quality`` the re-encode quality after it (``None``: no re-encode);
    ``resize`` ``"vl_imreadjpeg"`` or ``"imresize"`` for the 224x224 step, with kernel
    ``interpolation`` (``"bicubic"`` or ``"bilinear"``);
    ``average_image`` the mean subtracted (float32, (3,) or (224, 224, 3));
    ``greyscale_mean`` how a 3-value mean is subtracted from a grey image (``"first"``: the
    first value from all three channels, as ``vl_imreadjpeg``; ``"per-channel"``).
    """

    name: str
    pre_resize: tuple[int, int] | None = None
    jpeg_quality: int | None = MATLAB_JPEG_QUALITY
    resize: str = "vl_imreadjpeg"
    average_image: np.ndarray | None = None
    interpolation: str = "bicubic"
    greyscale_mean: str = "first"

    def record(self) -> dict[str, Any]:
        """Plain description stored with every result and used in cache keys."""
        if self.name == "torchvision":
            return {"name": "torchvision", "steps": ["Resize(256) bilinear antialias",
                                                     "CenterCrop(224)", "ToTensor() 0-1",
                                                     "Normalize(ImageNet mean, std)"],
                    "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        avg = np.zeros(3, np.float32) if self.average_image is None else self.average_image
        avg_desc: Any = avg.astype(float).round(6).tolist() if avg.size == 3 else {
            "shape": list(avg.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(avg, np.float32).tobytes()).hexdigest()}
        return {"name": "matlab",
                "pre_resize": list(self.pre_resize) if self.pre_resize else None,
                "pre_resize_method": "MATLAB imresize bicubic antialias" if self.pre_resize
                else None,
                "jpeg_reencode_quality": self.jpeg_quality if self.pre_resize else None,
                "resize": f"{self.resize} {self.interpolation} to {INPUT_SIZE}x{INPUT_SIZE} "
                          + ("(largest centred square: the whole image when square)"
                             if self.resize == "vl_imreadjpeg" else "(whole image)"),
                "interpolation": self.interpolation,
                "average_image": avg_desc, "scale": "0-255", "std": None,
                "channels": "RGB",
                "greyscale_mean": self.greyscale_mean,
                "greyscale": "grey channel replicated to RGB; " + (
                    "a 3-value mean's first value subtracted from all three channels "
                    "(vl_imreadjpeg 'Pack')" if self.greyscale_mean == "first" else
                    "each channel's own mean value subtracted")}

    def __call__(self, path: str | Path) -> torch.Tensor:
        """Load and preprocess one image file."""
        if self.name == "torchvision":
            return _torchvision(read_rgb(path))
        return torch.from_numpy(_matlab(read_pixels(path), self))


def read_pixels(path: str | Path) -> np.ndarray:
    """An image file as uint8: H x W for a greyscale file (:data:`GREY_MODES`), else
    H x W x 3 RGB; an ``InputError`` naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            out = im.convert("L") if im.mode in GREY_MODES else im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from exc
    return np.asarray(out, dtype=np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB (grey replicated); an ``InputError`` naming the
    file if unreadable."""
    pixels = read_pixels(path)
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an H x W x 3 (or H x W grey) uint8 image as JPEG at ``quality`` and decode it
    again (a grey image as a one-channel JPEG)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L" if image.ndim == 2 else "RGB"), dtype=np.uint8)


def _average(avg: np.ndarray | None) -> np.ndarray:
    """The mean as something that broadcasts over 224 x 224 x 3."""
    if avg is None:
        return np.zeros(3, np.float32)
    avg = np.asarray(avg, dtype=np.float32)
    if avg.size == 3:
        return avg.reshape(3)
    if avg.shape == (INPUT_SIZE, INPUT_SIZE, 3):
        return avg
    raise InputError(f"average_image must have shape (3,) or ({INPUT_SIZE}, {INPUT_SIZE}, 3), "
                     f"got {avg.shape}")


def subtract_average(x: np.ndarray, average: np.ndarray, greyscale_mean: str) -> np.ndarray:
    """``x`` (H x W x 1 grey or H x W x 3 RGB, float32) minus ``average`` as H x W x 3.

    A grey image is replicated to three channels first; with a 3-value ``average`` and
    ``greyscale_mean="first"`` all three then lose ``average[0]`` (``vl_imreadjpeg``'s grey
    branch), with ``"per-channel"`` each channel its own value. A full mean image is
    subtracted per pixel and channel either way.
    """
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
        if average.size == 3 and greyscale_mean == "first":
            return x - average[0]
    return x - average


def _matlab(image: np.ndarray, p: Preprocessing) -> np.ndarray:
    """The ``"matlab"`` steps on an RGB (H x W x 3) or grey (H x W) uint8 image; returns
    3 x 224 x 224 float32."""
    if p.pre_resize is not None:
        image = imresize(image, p.pre_resize)
        if p.jpeg_quality is not None:
            image = jpeg_roundtrip(image, p.jpeg_quality)
    size = (INPUT_SIZE, INPUT_SIZE)
    if p.resize == "vl_imreadjpeg":
        x = vl_imreadjpeg_resize(image, size, p.interpolation)
    else:
        x = imresize(image.astype(np.float32), size, method=p.interpolation).astype(np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
    x = subtract_average(x, _average(p.average_image), p.greyscale_mean)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _torchvision(image: np.ndarray) -> torch.Tensor:
    """The ``"torchvision"`` steps on an RGB uint8 image."""
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(INPUT_SIZE),
                             transforms.ToTensor(),
                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return tf(Image.fromarray(image))


_CHOICES = {"resize": RESIZES, "interpolation": INTERPOLATIONS,
            "greyscale_mean": GREYSCALE_MEANS}


def make_preprocessing(name: str, average_image: np.ndarray | None = None,
                       pre_resize: tuple[int, int] | None = None,
                       jpeg_quality: int | None = MATLAB_JPEG_QUALITY,
                       resize: str = "vl_imreadjpeg", interpolation: str = "bicubic",
                       greyscale_mean: str = "first") -> Preprocessing:
    """A :class:`Preprocessing` by name (``"matlab"`` or ``"torchvision"``); the other
    arguments are the ``"matlab"`` options (an ``InputError`` names a bad one)."""
    if name not in NAMES:
        raise InputError(f"unknown preprocessing {name!r}; choose one of {list(NAMES)}")
    if name == "torchvision":
        return Preprocessing(name="torchvision", jpeg_quality=None, resize="torchvision")
    given = {"resize": resize, "interpolation": interpolation, "greyscale_mean": greyscale_mean}
    for option, value in given.items():
        if value not in _CHOICES[option]:
            raise InputError(f"{option} must be one of {list(_CHOICES[option])}, got {value!r}")
    avg = _average(average_image)
    return Preprocessing(name="matlab", pre_resize=pre_resize, jpeg_quality=jpeg_quality,
                         resize=resize, average_image=avg, interpolation=interpolation,
                         greyscale_mean=greyscale_mean)
