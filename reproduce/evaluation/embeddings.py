"""Batched, cached embedding extraction (``feats_l2`` of a converted model).

Images go through a :class:`~reproduce.evaluation.preprocess.Preprocessing` in a ``DataLoader``
(``workers`` processes), the model runs in eval mode without gradients, and the N x D float32
embeddings are cached on disk under ``<cache_dir>/<key>/``. The key is a hash of

- the model: the card's ``source_sha256`` plus a hash of every state-dict tensor,
- the preprocessing record (name, sizes, mean image, ...),
- the image list: each path with its size and modification time,

so a changed model, preprocessing or image never reuses stale features; features extracted
on a GPU (``device`` other than ``cpu``, whose float32 results differ from the CPU's in the
last bits) are keyed apart by the device type. Extraction stores
completed chunks (``chunk_<start>.npy``, written atomically) and ``key.json``; an interrupted
run finds them and resumes with the next chunk. When all chunks are done they are merged into
``features.npy`` and removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from converters.fastap.card import ModelCard
from reproduce.errors import InputError
from reproduce.evaluation.preprocess import Preprocessing
from reproduce.evaluation.ranks_torch import full_precision_matmul
from reproduce.outputs import atomic_path, write_json

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024
"""Images per stored chunk: the most work an interruption can lose."""


class ImageFiles(TorchDataset):
    """Preprocessed images from a list of paths (what the ``DataLoader`` reads)."""

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing):
        self.paths = [Path(p) for p in paths]
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        """The preprocessed image, or the ``InputError`` message when it cannot be read (a
        ``DataLoader`` worker would wrap the exception in its traceback; ``_embed`` raises it
        again, clean, in the main process)."""
        try:
            return self.preprocessing(self.paths[i])
        except InputError as exc:
            return str(exc)


def _collate(items: list[torch.Tensor | str]) -> torch.Tensor | list[str]:
    """Stack a batch of images, or return the error messages when any image failed."""
    errors = [x for x in items if isinstance(x, str)]
    if errors:
        return errors
    return torch.stack(items)  # type: ignore[arg-type]


def model_hash(model: nn.Module, card: ModelCard) -> str:
    """SHA-256 over the card's ``source_sha256`` and every state-dict tensor (name and bytes)."""
    h = hashlib.sha256()
    h.update(str(card.source_sha256 or "").encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def image_list_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over each path with its size and modification time (missing: an InputError)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise InputError(f"{p}: cannot read image: {exc.strerror}") from exc
        h.update(f"{os.fspath(p)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(model_digest: str, preprocessing: dict[str, Any], images_digest: str,
              count: int, device: str = "cpu") -> dict[str, Any]:
    """The full cache key record (stored as ``key.json``); the device type enters it only
    when it is not the CPU, so caches written before devices existed stay valid."""
    key = {"model": model_digest, "preprocessing": preprocessing, "images": images_digest,
           "count": count}
    kind = torch.device(device).type
    if kind != "cpu":
        key["device"] = kind
    return key


def _key_dir(cache_dir: Path, key: dict[str, Any]) -> Path:
    """``<cache_dir>/<first 20 hex of the key's hash>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / digest


def _embed(model: nn.Module, paths: Sequence[Path], preprocessing: Preprocessing,
           batch_size: int, workers: int, bar: tqdm | None,
           device: str = "cpu") -> np.ndarray:
    """Run the model (already on ``device``) on ``paths`` in batches; N x D float32, with
    TF32 off (on a GPU, convolutions and products would otherwise round to 10-bit mantissas)."""
    loader = DataLoader(ImageFiles(paths, preprocessing), batch_size=batch_size,
                        num_workers=workers, shuffle=False, collate_fn=_collate,
                        pin_memory=device != "cpu")
    out = []
    with torch.no_grad(), full_precision_matmul():
        for batch in loader:
            if isinstance(batch, list):
                raise InputError(batch[0])
            feats = model(batch.to(device, non_blocking=True).float())
            out.append(feats.detach().cpu().numpy().astype(np.float32, copy=False))
            if bar is not None:
                bar.update(len(batch))
    return np.concatenate(out, axis=0)


def extract_embeddings(model: nn.Module, card: ModelCard, paths: Sequence[Path],
                       preprocessing: Preprocessing, batch_size: int = 32, workers: int = 0,
                       cache_dir: str | os.PathLike[str] | None = None,
                       chunk_size: int = DEFAULT_CHUNK, progress: bool = True,
                       device: str = "cpu") -> np.ndarray:
    """N x D float32 embeddings of ``paths`` (in order), from the cache when it has them.

    The model is moved to ``device`` (``cpu``, ``cuda``, ``cuda:1``) and run there.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no images to embed")
    if batch_size < 1 or workers < 0 or chunk_size < 1:
        raise InputError(f"batch_size and chunk_size must be >= 1 and workers >= 0, got "
                         f"{batch_size}, {chunk_size}, {workers}")
    model.eval()
    if cache_dir is None:
        model.to(device)
        with tqdm(total=len(paths), desc="embeddings", unit="img", disable=not progress) as bar:
            return _embed(model, paths, preprocessing, batch_size, workers, bar, device)
    key = cache_key(model_hash(model, card), preprocessing.record(), image_list_hash(paths),
                    len(paths), device)
    folder = _key_dir(Path(cache_dir), key)
    final = folder / "features.npy"
    key_file = folder / "key.json"
    if final.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
        log.info("embeddings: cache hit %s", final)
        return np.load(final)
    folder.mkdir(parents=True, exist_ok=True)
    if key_file.is_file() and json.loads(key_file.read_text()) != key:
        raise InputError(f"{key_file}: cache key collision (a different key in the folder); "
                         "delete the folder")
    write_json(key_file, key)
    model.to(device)
    chunks = []
    with tqdm(total=len(paths), desc="embeddings", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), chunk_size):
            stop = min(len(paths), start + chunk_size)
            chunk_file = folder / f"chunk_{start:09d}_{stop:09d}.npy"
            if chunk_file.is_file():
                feats = np.load(chunk_file)
                bar.update(stop - start)
                log.debug("embeddings: resumed chunk %s", chunk_file.name)
            else:
                feats = _embed(model, paths[start:stop], preprocessing, batch_size, workers, bar,
                               device)
                with atomic_path(chunk_file) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, feats)
            chunks.append(feats)
    features = np.concatenate(chunks, axis=0)
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        np.save(fh, features)
    for f in folder.glob("chunk_*.npy"):
        f.unlink()
    return features
