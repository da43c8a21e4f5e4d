"""Per-epoch table from a checkpoint's ``stats`` (``net-epoch-N.mat``), as from a diary.

``train_hard.m`` saves ``stats.train(e)`` and ``stats.val(e)``: structs with ``num``,
``time`` and, once the loss layer reported one, ``objective``. The caller loads the file
(``converters.matio.read.load_mat(path, variables=["stats"])``); this module only reads the
plain tree (dicts, lists, MATLAB-shaped arrays), so ``logs`` needs no MAT reader.

The checkpoint's objective is the loss layer's running ``average`` over the epoch; the
diary's ``Avg train obj`` is the mean of the per-batch objectives with NaNs dropped. The two
need not agree to the last digit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from logs.errors import LogFormatError
from logs.frames import BASE_COLUMNS


def _scalar(value: Any, where: str) -> float:
    """A MATLAB 1x1 value (array, number, 1-element list) as float; empty -> NaN."""
    array = np.asarray(value, dtype=np.float64).ravel()
    if array.size == 0:
        return float("nan")
    if array.size != 1:
        raise LogFormatError(f"{where}: expected a scalar, got shape {np.shape(value)}")
    return float(array[0])


def _entries(value: Any) -> list[Mapping[str, Any]]:
    """``stats.train`` as a list of per-epoch dicts (a single struct is one epoch)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.ravel().tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [v if isinstance(v, Mapping) else {} for v in value]
    raise LogFormatError(f"stats.train: expected a list of structs, got {type(value).__name__}")


def stats_epochs(stats_tree: Mapping[str, Any], run: str) -> pd.DataFrame:
    """``run``, ``epoch``, ``train_objective`` (+ ``train_time``) from a ``stats`` tree.

    Accepts the ``stats`` value itself or a dict holding it under ``"stats"``.
    """
    if "stats" in stats_tree and "train" not in stats_tree:
        stats_tree = stats_tree["stats"]
    if not isinstance(stats_tree, Mapping) or "train" not in stats_tree:
        raise LogFormatError(f"{run}: checkpoint stats have no 'train' field")
    rows = []
    for index, entry in enumerate(_entries(stats_tree["train"]), start=1):
        where = f"{run}: stats.train({index})"
        rows.append({
            "run": run,
            "epoch": index,
            "train_objective": (_scalar(entry["objective"], where + ".objective")
                                if "objective" in entry else float("nan")),
            "train_time": (_scalar(entry["time"], where + ".time")
                           if "time" in entry else float("nan")),
        })
    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, "train_time"])
    frame["epoch"] = frame["epoch"].astype("int64")
    return frame
