"""Training and test input: the authors' MATLAB preprocessing at the run's image size.

Each image is read as ``vl_imreadjpeg`` reads it (:func:`reproduce.evaluation.preprocess
.read_pixels`), given the dataset's one-off pre-resize (SOP, VehicleID: ``imresize`` to
256x256 and the JPEG re-encode), resized to ``image_size`` squared with ``vl_imreadjpeg``'s
bicubic resize and has the average image subtracted: at 224 this is exactly the ``matlab``
preprocessing of ``fastap evaluate``. The training images are flipped afterwards, per image
and batch (:func:`reproduce.training.step.draw_flips`), outside the loader, so that the
flips follow the run's seeded generator whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from reproduce.evaluation.imresize import imresize, vl_imreadjpeg_resize
from reproduce.evaluation.preprocess import (
    MATLAB_JPEG_QUALITY,
    jpeg_roundtrip,
    read_pixels,
    subtract_average,
)


def fit_average(average: np.ndarray, image_size: int) -> np.ndarray:
    """The average image for ``image_size`` input: a 3-vector as is; a full mean image of
    another size is reduced to its per-channel mean (ours; the authors train at 224)."""
    average = np.asarray(average, np.float32)
    if average.size == 3:
        return average.reshape(3)
    if average.shape == (image_size, image_size, 3):
        return average
    return average.reshape(-1, 3).mean(axis=0).astype(np.float32)


def load_image(path: str | Path, image_size: int, pre_resize: tuple[int, int] | None,
               average: np.ndarray) -> np.ndarray:
    """One image as network input: float32 ``3 x image_size x image_size`` (see module)."""
    image = read_pixels(path)
    if pre_resize is not None:
        image = jpeg_roundtrip(imresize(image, pre_resize), MATLAB_JPEG_QUALITY)
    x = vl_imreadjpeg_resize(image, (image_size, image_size), "bicubic")
    x = subtract_average(x, average, "first")
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


#: Datasets whose preprocessed images fit in this many bytes are kept in memory after the
#: first read (per process: with ``workers = 0`` across epochs). The result is the same; the
#: authors, too, resized their images once before training.
CACHE_BYTES = 512 * 2**20


class ImageSet(TorchDataset):
    """Images of a dataset by index, preprocessed (no flips); ``__getitem__`` -> tensor."""

    def __init__(self, paths: Sequence[Path], image_size: int,
                 pre_resize: tuple[int, int] | None, average: np.ndarray) -> None:
        self.paths = paths
        self.image_size = int(image_size)
        self.pre_resize = pre_resize
        self.average = fit_average(average, image_size)
        small = len(paths) * 3 * self.image_size ** 2 * 4 <= CACHE_BYTES
        self._cache: dict[int, torch.Tensor] | None = {} if small else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i].clone()
        x = torch.from_numpy(load_image(self.paths[i], self.image_size, self.pre_resize,
                                        self.average))
        if self._cache is not None:
            self._cache[i] = x.clone()
        return x


def collate_batch(items: list[torch.Tensor]) -> torch.Tensor:
    """Stack a batch of images (``N x 3 x S x S``)."""
    return torch.stack(items)
