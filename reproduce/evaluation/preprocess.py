"""Named, recorded input preprocessing: the authors' MATLAB pipeline or torchvision's.

``"matlab"`` (MATLAB_PIPELINE.md section 4; ``batch_imagenet.m`` itself is missing, so this
is a reconstruction, recorded as such):

1. read the JPEG as RGB uint8 (greyscale is replicated to three channels, CMYK converted by
   Pillow);
2. for SOP and VehicleID, ``imresize(im, [256 256])`` (MATLAB bicubic with antialiasing,
   aspect ratio not kept; :func:`reproduce.evaluation.imresize.imresize`), then by default a JPEG
   re-encode at quality 75 (MATLAB ``imwrite``'s default; Pillow's libjpeg with its default
   4:2:0 chroma subsampling, which MATLAB's encoder may not share bit for bit);
3. resize the whole (square) image to 224x224 as ``vl_imreadjpeg(..., 'Resize', [224 224],
   'Interpolation', 'bicubic')`` does
   (:func:`reproduce.evaluation.imresize.vl_imreadjpeg_resize`: the
   same a = -0.5 cubic, single precision, antialiased when shrinking, replicated borders; a
   non-square image, possible only for In-Shop, is centre-cropped to a square first, as
   ``vl_imreadjpeg`` does), because that is the reader the authors' batch function used;
   ``resize="imresize"`` uses MATLAB ``imresize`` instead;
4. subtract the model's ``averageImage`` (3-vector or 224x224x3 HxWxC, RGB) on the 0-255
   scale, no division by a standard deviation.

``"torchvision"``: ``Resize(256)`` (bilinear, antialiased), ``CenterCrop(224)``,
``ToTensor()`` (0-1), ``Normalize`` with the ImageNet mean and std.

Both produce float32 C x H x W tensors and a plain dict (:func:`Preprocessing.record`) that
every output stores.
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
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MATLAB_JPEG_QUALITY = 75


@dataclass(frozen=True)
class Preprocessing:
    """One preprocessing choice; ``__call__(path)`` gives a float32 3 x 224 x 224 tensor.

    ``pre_resize`` is the dataset's one-off resize (``(256, 256)`` or ``None``);
    ``jpeg_quality`` the re-encode quality after it (``None``: no re-encode);
    ``resize`` ``"vl_imreadjpeg"`` or ``"imresize"`` for the 224x224 step;
    ``average_image`` the mean subtracted (float32, (3,) or (224, 224, 3)).
    """

    name: str
    pre_resize: tuple[int, int] | None = None
    jpeg_quality: int | None = MATLAB_JPEG_QUALITY
    resize: str = "vl_imreadjpeg"
    average_image: np.ndarray | None = None

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
                "resize": f"{self.resize} bicubic to {INPUT_SIZE}x{INPUT_SIZE} "
                          + ("(largest centred square: the whole image when square)"
                             if self.resize == "vl_imreadjpeg" else "(whole image)"),
                "average_image": avg_desc, "scale": "0-255", "std": None,
                "channels": "RGB"}

    def __call__(self, path: str | Path) -> torch.Tensor:
        """Load and preprocess one image file."""
        image = read_rgb(path)
        if self.name == "torchvision":
            return _torchvision(image)
        return torch.from_numpy(_matlab(image, self))


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB; an ``InputError`` naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an H x W x 3 uint8 image as JPEG at ``quality`` and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


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


def _matlab(image: np.ndarray, p: Preprocessing) -> np.ndarray:
    """The ``"matlab"`` steps on an RGB uint8 image; returns 3 x 224 x 224 float32."""
    if p.pre_resize is not None:
        image = imresize(image, p.pre_resize)
        if p.jpeg_quality is not None:
            image = jpeg_roundtrip(image, p.jpeg_quality)
    size = (INPUT_SIZE, INPUT_SIZE)
    if p.resize == "vl_imreadjpeg":
        x = vl_imreadjpeg_resize(image, size)
    elif p.resize == "imresize":
        x = imresize(image.astype(np.float32), size).astype(np.float32)
    else:
        raise InputError(f"resize must be 'vl_imreadjpeg' or 'imresize', got {p.resize!r}")
    x = x - _average(p.average_image)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _torchvision(image: np.ndarray) -> torch.Tensor:
    """The ``"torchvision"`` steps on an RGB uint8 image."""
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(INPUT_SIZE),
                             transforms.ToTensor(),
                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return tf(Image.fromarray(image))


def make_preprocessing(name: str, average_image: np.ndarray | None = None,
                       pre_resize: tuple[int, int] | None = None,
                       jpeg_quality: int | None = MATLAB_JPEG_QUALITY,
                       resize: str = "vl_imreadjpeg") -> Preprocessing:
    """A :class:`Preprocessing` by name (``"matlab"`` or ``"torchvision"``)."""
    if name not in NAMES:
        raise InputError(f"unknown preprocessing {name!r}; choose one of {list(NAMES)}")
    if name == "torchvision":
        return Preprocessing(name="torchvision", jpeg_quality=None, resize="torchvision")
    if resize not in ("vl_imreadjpeg", "imresize"):
        raise InputError(f"resize must be 'vl_imreadjpeg' or 'imresize', got {resize!r}")
    avg = _average(average_image)
    return Preprocessing(name="matlab", pre_resize=pre_resize, jpeg_quality=jpeg_quality,
                         resize=resize, average_image=avg)
