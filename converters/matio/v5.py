"""Read MAT v5/v7 files (scipy) into the plain tree that ``converters.matio.read.load_mat`` returns.

scipy is asked for the raw MATLAB layout (``mat_dtype=True`` so integer-compacted doubles come
back as float64, no squeezing, records for structs) and this module turns it into the plain
tree documented in ``converters.matio.read``: structs become dicts (or lists of dicts), cells
lists, char arrays str, numeric arrays keep MATLAB's class and shape.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from typing import Any

import numpy as np
import scipy.io
import scipy.sparse
from scipy.io.matlab import MatlabFunction, MatlabOpaque, MatReadError

from converters.errors import MatConvNetError

log = logging.getLogger(__name__)

# What scipy raises on damaged or truncated v5 files (zlib errors, short reads, bad tags).
_READ_ERRORS = (MatReadError, ValueError, TypeError, OSError, EOFError, zlib.error,
                IndexError, KeyError, AttributeError)


def load_v5(path: str | os.PathLike[str], variables: list[str] | None = None) -> dict[str, Any]:
    """Load the named (or all) variables of a v5/v7 MAT file as a plain tree."""
    try:
        with warnings.catch_warnings():
            # scipy's mat_dtype casts complex doubles to float64, dropping the imaginary part:
            # refuse rather than return wrong numbers (MatConvNet files hold no complex data).
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            raw = scipy.io.loadmat(
                os.fspath(path),
                variable_names=variables,
                mat_dtype=True,
                squeeze_me=False,
                struct_as_record=True,
                chars_as_strings=True,
                verify_compressed_data_integrity=True,
            )
    except np.exceptions.ComplexWarning as exc:
        raise MatConvNetError(f"{path}: holds complex numbers, which the MAT v5/v7 reader "
                              "does not support") from exc
    except _READ_ERRORS as exc:
        raise MatConvNetError(f"{path}: cannot read MAT v5/v7 file "
                              f"(truncated or damaged?): {exc}") from exc
    tree: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith("__"):  # __header__, __version__, __globals__, __function_workspace__
            continue
        tree[name] = to_plain(value, f"{path}:{name}")
    return tree


def list_v5(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, class)}`` of a v5/v7 file, from the variable headers only."""
    try:
        entries = scipy.io.whosmat(os.fspath(path), chars_as_strings=False)
    except _READ_ERRORS as exc:
        raise MatConvNetError(f"{path}: cannot list MAT v5/v7 variables "
                              f"(truncated or damaged?): {exc}") from exc
    return {name: (tuple(int(n) for n in shape), cls) for name, shape, cls in entries}


def to_plain(value: Any, where: str = "") -> Any:
    """Turn one value as scipy loads it (``mat_dtype=True``, unsqueezed) into the plain tree.

    ``where`` names the value (file and field path) in warnings about skipped objects.
    """
    if isinstance(value, MatlabOpaque | MatlabFunction):
        log.warning("%s: skipping a MATLAB object/function handle (%s)", where,
                    type(value).__name__)
        return None
    if scipy.sparse.issparse(value):
        return np.asarray(value.toarray())
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.names is not None:
        return _struct(value, where)
    if value.dtype.kind == "U":
        return _chars(value)
    if value.dtype.kind == "O":
        return _cell(value, where)
    return np.asarray(value)


def _struct(value: np.ndarray, where: str) -> dict[str, Any] | list[dict[str, Any]]:
    """A struct (record array): a dict for 1x1, else a list of dicts in column-major order."""
    names = value.dtype.names or ()
    items = [
        {name: to_plain(element[name], f"{where}.{name}") for name in names}
        for element in value.ravel(order="F")
    ]
    if value.shape == (1, 1):
        return items[0]
    return items


def _chars(value: np.ndarray) -> str | list[str]:
    """A char array loaded with ``chars_as_strings``: one row -> str, several -> list[str]."""
    rows = [str(row) for row in value.ravel(order="F")]
    if not rows:
        return ""
    if len(rows) == 1:
        return rows[0]
    return rows


def _cell(value: np.ndarray, where: str) -> Any:
    """A cell array as a list; scipy's ``[[None]]`` (a field-less struct) becomes ``{}``."""
    elements = list(value.ravel(order="F"))
    if elements and all(element is None for element in elements):
        if value.shape == (1, 1):
            return {}
        return [{} for _ in elements]
    return [to_plain(element, f"{where}{{{i + 1}}}") for i, element in enumerate(elements)]
