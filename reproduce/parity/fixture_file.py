"""Read saved MATLAB fixture files (MAT v5, as ``scipy.io.loadmat`` returns them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from converters.errors import MatConvNetError
from converters.matio.read import FORMAT_V73, load_mat, mat_format
from reproduce.errors import InputError


def load_fixture(path: Path) -> dict[str, Any]:
    """The file's variables; any read failure becomes an ``InputError`` naming the file.

    MAT v5/v7 files load as ``scipy.io.loadmat`` returns them; v7.3 (HDF5) files through
    :func:`converters.matio.read.load_mat`, whose numeric arrays have the same MATLAB shapes
    and whose text is plain strings (which :func:`fixture_text` reads alike).
    """
    if _is_v73(path):
        return load_mat(path)
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy signals damaged files with many types (IndexError too)
        raise InputError(f"{path}: cannot read as a MAT file: {exc}") from exc


def fixture_text(value: Any, sep: str = " ") -> str:
    """A MATLAB char array (or cell of them) as one string, rows joined by ``sep``."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return sep.join(str(s).rstrip() for s in arr.ravel())
    if arr.dtype == object:
        return sep.join(fixture_text(v, sep) for v in arr.ravel())
    raise InputError(f"expected text, got an array of {arr.dtype}")


def _is_v73(path: Path) -> bool:
    """Whether ``path`` is a MAT v7.3 (HDF5) file; anything unreadable is left to scipy."""
    try:
        return mat_format(path) == FORMAT_V73
    except (MatConvNetError, OSError):
        return False
