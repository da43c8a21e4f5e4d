"""Coerce values of a loaded MAT tree (MATLAB-shaped arrays, strings, lists) to Python types.

``load_mat`` keeps MATLAB's shapes (a scalar is a 1x1 array, a row vector 1xN); layer code
asks for the Python value it needs through these, so the shape rules live in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_float(value: Any) -> float:
    """A MATLAB scalar (1x1 array, Python number, or 1-element list) as float."""
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != 1:
        raise ValueError(f"expected a scalar, got shape {np.shape(value)}")
    return float(arr[0])


def to_int(value: Any) -> int:
    """A MATLAB integer-valued scalar as int."""
    number = to_float(value)
    if number != int(number):
        raise ValueError(f"expected an integer, got {number}")
    return int(number)


def to_bool(value: Any) -> bool:
    """A MATLAB logical or numeric scalar as bool."""
    return bool(to_float(value))


def to_floats(value: Any) -> list[float]:
    """A MATLAB numeric array, in column-major order, as a list of floats (empty for [])."""
    return [float(v) for v in np.asarray(value, dtype=np.float64).ravel(order="F")]


def to_ints(value: Any) -> list[int]:
    """A MATLAB integer-valued array, in column-major order, as a list of ints."""
    numbers = to_floats(value)
    if any(v != int(v) for v in numbers):
        raise ValueError(f"expected integers, got {numbers}")
    return [int(v) for v in numbers]


def to_str(value: Any) -> str:
    """A MATLAB char array (already a str, or a 1-element list of one) as str."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, np.ndarray) and value.size == 0:
        return ""
    raise ValueError(f"expected text, got {type(value).__name__}")


def to_strs(value: Any) -> list[str]:
    """A MATLAB cell array of strings (list, or a single str) as a list of str."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    if isinstance(value, list):
        return [to_str(v) for v in value]
    raise ValueError(f"expected a cell array of text, got {type(value).__name__}")
