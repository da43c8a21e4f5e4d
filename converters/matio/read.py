"""The one entry point for reading a ``.mat`` file into plain Python, whatever its version.

The plain tree (what ``load_mat`` returns and ``converters.matio.write.save_mat`` accepts):

- a 1x1 struct -> ``dict``; a struct array of any other size -> ``list[dict]`` in column-major
  order (a 0x0 struct -> ``[]``); a field-less 1x1 struct -> ``{}``;
- a cell array -> ``list`` in column-major order (a 1-element cell stays a 1-element list);
- char -> ``str`` (a multi-row char matrix -> ``list[str]``); an empty char -> ``""``;
- numeric -> ``np.ndarray`` with MATLAB's class as dtype (double float64, single float32,
  intN...) and MATLAB's shape (at least 2-D: a scalar is (1, 1)), indexed like MATLAB:
  ``arr[i, j]`` is ``A(i+1, j+1)``; integer-valued doubles stay float64;
- logical -> bool array; ``[]`` -> float64 array of shape (0, 0);
- MCOS objects (``string``, class instances) and function handles -> ``None`` with a warning.

The format is detected from the file header (never from the name): v4/v5/v7 are read with
scipy (``converters.matio.v5``), v7.3 (HDF5) with h5py (``converters.matio.v73``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy.io.matlab import MatReadError, matfile_version

from converters.errors import MatConvNetError
from converters.matio.v5 import list_v5, load_v5
from converters.matio.v73 import list_v73, load_v73

FORMAT_V5 = "v5"
FORMAT_V73 = "v7.3"


def mat_format(path: str | os.PathLike[str]) -> str:
    """``"v5"`` (v4, v5 or v7) or ``"v7.3"`` (HDF5), read from the file header.

    A missing file raises FileNotFoundError; a file that is not a MAT file (or too short to
    hold a header) raises MatConvNetError naming it.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MatConvNetError(f"{path}: is a folder, not a MAT file")
    try:
        major, _minor = matfile_version(os.fspath(path))
    except (MatReadError, ValueError, OSError, EOFError, IndexError) as exc:  # junk, short
        raise MatConvNetError(f"{path}: not a MATLAB .mat file ({exc})") from exc
    if major == 2:
        return FORMAT_V73
    if major in (0, 1):
        if major == 0:
            _check_v4(path)
        return FORMAT_V5
    raise MatConvNetError(f"{path}: unknown MAT file version {major}")


def _check_v4(path: str | os.PathLike[str]) -> None:
    """scipy calls any file with a zero byte in its first four 'v4'; check the v4 header."""
    with open(path, "rb") as handle:
        head = handle.read(20)
    if len(head) < 20:
        raise MatConvNetError(f"{path}: not a MATLAB .mat file (too short)")
    for order in ("<", ">"):
        mopt, rows, cols, imag, namelen = np.frombuffer(head, dtype=f"{order}i4")
        if (0 <= mopt < 5000 and rows >= 0 and cols >= 0 and imag in (0, 1)
                and 0 < namelen < 64):
            return
    raise MatConvNetError(f"{path}: not a MATLAB .mat file (no MAT header)")


def list_variables(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (MATLAB shape, MATLAB class)}`` for every variable, without reading the data."""
    if mat_format(path) == FORMAT_V73:
        return list_v73(path)
    return list_v5(path)


def load_mat(path: str | os.PathLike[str], variables: list[str] | None = None) -> dict[str, Any]:
    """Load a MAT file (any version) as a plain tree ``{variable name: value}``.

    ``variables`` restricts reading to those top-level names (the others are not read at all,
    so a checkpoint's large ``state`` costs nothing when not asked for); names the file does
    not hold are simply absent from the result.
    """
    if mat_format(path) == FORMAT_V73:
        return load_v73(path, variables)
    return load_v5(path, variables)
