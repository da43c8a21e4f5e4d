"""Checkpoints of a ``fastap train`` run: ``checkpoint-epoch-N.pt`` beside ``net-epoch-N.mat``.

A checkpoint holds everything a resumed run needs to continue exactly: the model's
``state_dict`` (MatConvNet BatchNorm ``mult``, ``bias`` and ``moments`` included), McnAdam's
state (``m``, ``v``, ``t`` per parameter), the sampler's ``state_dict``, torch's and numpy's
global RNG states, the options, the per-epoch ``(time, objective)`` history and the epoch it
ends. Files are written through :func:`converters.atomic_file.atomic_path` (a temporary file
renamed over the target), so a write that fails (full disk, Ctrl-C, SIGKILL) leaves the
previous checkpoint as it was; the failure is an ``InputError`` naming the file. On resume
the newest ``checkpoint-epoch-N.pt`` is read; a damaged one is an ``InputError`` naming it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.atomic_file import atomic_path
from reproduce.errors import InputError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-epoch-(\d+)\.pt$")
FORMAT = "fastap-train-checkpoint"
FORMAT_VERSION = 1
#: What ``torch.load`` raises on a truncated or overwritten file.
_DAMAGED = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile)
_REQUIRED = ("format", "version", "epoch", "model", "optimizer", "sampler", "options",
             "history")


def checkpoint_path(folder: Path, epoch: int) -> Path:
    """``<folder>/checkpoint-epoch-<epoch>.pt``."""
    return folder / f"checkpoint-epoch-{epoch}.pt"


def newest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """``(epoch, path)`` of the newest checkpoint in ``folder``, or ``None``."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-epoch-*.pt")
             if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found) if found else None


def rng_state() -> dict[str, Any]:
    """torch's and numpy's global RNG states."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically; an ``OSError`` (full disk ...) becomes an ``InputError``
    naming the file, the previous checkpoint left valid."""
    data = {"format": FORMAT, "version": FORMAT_VERSION, **payload}
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")  # a bug, not user input
    try:
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the checkpoint ({exc}); the previous "
                         "checkpoint, if any, is unchanged") from exc
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint; a damaged or foreign file is an ``InputError`` naming it."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except _DAMAGED as exc:
        raise InputError(f"{path}: damaged checkpoint, cannot be read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to "
                         "resume from the one before") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a fastap train checkpoint")
    if data.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format {data.get('version')}, this version "
                         f"reads {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InputError(f"{path}: damaged checkpoint, lacks {missing}")
    return data
