"""Tidy tables (pandas) from parsed runs: one row per run and epoch, one row per run.

``epochs_table`` is the format other checks rely on: columns ``run``, ``epoch``,
``train_objective``, then one column per recall value (``R@1``, ``R@10``, ... or, for
VehicleID, ``small R@1``, ``small R@5``, ``medium R@1``, ...), empty (NaN) where an epoch has
no evaluation. Recall values are fractions exactly as the diary prints them (``%.3f``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from logs.diary_parser import Run

BASE_COLUMNS = ["run", "epoch", "train_objective"]
_SUBSET_ORDER = {"": 0, "small": 1, "medium": 2, "large": 3}
_RECALL_COLUMN = re.compile(r"^(?:(?P<subset>\w+) )?R@(?P<K>\d+)$")
#: Options copied into their own runs-table columns (the rest go to ``options_json``).
RUN_OPTION_COLUMNS = ("dataset", "arch", "dim", "batchSize", "nbins", "solver", "lr", "lrmult",
                      "wdecay", "epoch", "testInterval", "maxGpuImgs", "expID", "identifier")


def recall_sort_key(column: str) -> tuple[int, int, str]:
    """Order recall columns by subset (none, small, medium, large), then K."""
    match = _RECALL_COLUMN.match(column)
    if not match:
        return (99, 0, column)
    subset = (match.group("subset") or "").lower()
    return (_SUBSET_ORDER.get(subset, 50), int(match.group("K")), column)


def is_recall_column(column: str) -> bool:
    """Whether a column name is a recall column (``R@K`` or ``<subset> R@K``)."""
    return bool(_RECALL_COLUMN.match(column))


def order_epoch_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Put the base columns first, then recall columns in order, then anything else."""
    recall = sorted((c for c in frame.columns if is_recall_column(c)), key=recall_sort_key)
    rest = [c for c in frame.columns if c not in BASE_COLUMNS and c not in recall]
    for column in BASE_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="float64")
    return frame[BASE_COLUMNS + recall + rest]


def epochs_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run and epoch: ``run``, ``epoch``, ``train_objective``, recall columns."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        for epoch, record in sorted(run.epochs.items()):
            row: dict[str, Any] = {"run": run.name, "epoch": epoch,
                                   "train_objective": _float(record.train_objective)}
            row.update(record.recall)
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame = order_epoch_columns(frame)
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["train_objective"] = frame["train_objective"].astype("float64")
    return frame.reset_index(drop=True)


def epoch_details_table(runs: Iterable[Run]) -> pd.DataFrame:
    """Per run and epoch: learning rate, mode, throughput, checkpoint, diary file, timings."""
    rows = []
    for run in runs:
        for epoch, record in sorted(run.epochs.items()):
            last = record.progress[-1] if record.progress else None
            rows.append({
                "run": run.name, "epoch": epoch, "lr": _float(record.lr),
                "solver": record.solver, "mode": record.mode,
                "meta_classes": record.meta_classes, "progress_lines": len(record.progress),
                "batches": last.batches if last else None,
                "batch_size": last.batch_size if last else None,
                "last_hz": last.hz if last else None,
                "checkpoint": record.checkpoint, "eval_seconds": record.eval_seconds or None,
                "date": record.date, "host": record.host, "diary": record.source,
            })
    frame = pd.DataFrame(rows, columns=["run", "epoch", "lr", "solver", "mode", "meta_classes",
                                        "progress_lines", "batches", "batch_size", "last_hz",
                                        "checkpoint", "eval_seconds", "date", "host", "diary"])
    return _integers(frame, ("epoch", "meta_classes", "progress_lines", "batches",
                             "batch_size"))


def runs_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: main options, files, epoch span, resumes, timings, problems, notes.

    ``model_seconds``/``imdb_seconds`` list ``get_model``/``get_imdb`` times per diary.
    """
    rows = []
    for run in runs:
        evaluated = [e for e, r in run.epochs.items() if r.evaluated]
        row: dict[str, Any] = {"run": run.name, "simulated": run.simulated}
        for key in RUN_OPTION_COLUMNS:
            row[key] = _plain(run.options.get(key))
        row.update({
            "files": ";".join(str(p) for p in run.files),
            "first_epoch": min(run.epochs) if run.epochs else None,
            "last_epoch": max(run.epochs) if run.epochs else None,
            "evaluated_epochs": " ".join(str(e) for e in sorted(evaluated)),
            "resumed_from": " ".join(str(d.resumed_from) for d in run.diaries
                                     if d.resumed_from is not None),
            "completed": next((d.completed for d in reversed(run.diaries)
                               if d.completed is not None), None),
            "model_seconds": " ".join(str(d.model_seconds) for d in run.diaries
                                      if d.model_seconds is not None),
            "imdb_seconds": " ".join(str(d.imdb_seconds) for d in run.diaries
                                     if d.imdb_seconds is not None),
            "lines": sum(d.lines for d in run.diaries),
            "unrecognised_lines": len(run.unrecognised),
            "matlab_messages": len(run.matlab_messages),
            "notes": " | ".join(run.notes),
            "options_json": json.dumps({k: _plain(v) for k, v in run.options.items()},
                                       sort_keys=True),
        })
        rows.append(row)
    columns = ["run", "simulated", *RUN_OPTION_COLUMNS, "files", "first_epoch", "last_epoch",
               "evaluated_epochs", "resumed_from", "completed", "model_seconds",
               "imdb_seconds", "lines", "unrecognised_lines",
               "matlab_messages", "notes", "options_json"]
    return _integers(pd.DataFrame(rows, columns=columns),
                     ("first_epoch", "last_epoch", "completed", "lines", "unrecognised_lines",
                      "matlab_messages"))


def _integers(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Counts stay integers in the CSV (``50``, not ``50.0``) even beside empty cells."""
    for column in columns:
        frame[column] = pd.to_numeric(frame[column]).astype("Float64").astype("Int64")
    return frame


def unrecognised_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Every line not used: unknown, truncated or out of place (file and line number)."""
    return _issues_frame([(run.name, issue) for run in runs for issue in run.unrecognised])


def matlab_messages_table(runs: Sequence[Run]) -> pd.DataFrame:
    """MATLAB's own warnings, errors and traces printed in between (file and line number)."""
    return _issues_frame([(run.name, issue) for run in runs for issue in run.matlab_messages])


def _issues_frame(issues: Sequence[tuple[str, Any]]) -> pd.DataFrame:
    """``run``, ``file``, ``line``, ``reason``, ``text`` rows, in file and line order."""
    rows = [{"run": name, "file": issue.file, "line": issue.line, "reason": issue.reason,
             "text": issue.text} for name, issue in issues]
    frame = pd.DataFrame(rows, columns=["run", "file", "line", "reason", "text"])
    return frame.sort_values(["run", "file", "line"], kind="stable").reset_index(drop=True)


def _float(value: float | None) -> float:
    """None -> NaN so the column stays numeric."""
    return float("nan") if value is None else float(value)


def _plain(value: Any) -> Any:
    """Lists become space-separated text so a CSV cell holds them."""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return value
