"""Read saved MATLAB fixture files (MAT v5, as ``scipy.io.loadmat`` returns them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from reproduce.errors import InputError


def load_fixture(path: Path) -> dict[str, Any]:
    """The file's variables; any read failure becomes an ``InputError`` naming the file."""
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
