"""``fastap logs``: parse diaries and checkpoint ``stats`` into ``epochs.csv`` and ``runs.csv``.

Each PATH is a diary file, a checkpoint ``net-epoch-N.mat``, or a folder searched
recursively for both. Diaries of one folder are one run (merged in order across resumes);
the newest checkpoint of a folder gives that folder's ``stats`` (epochs 1..N) as a second
run named ``<run> [stats net-epoch-N.mat]``.

Outputs, written directly into ``out`` (``fastap logs ... --out DIR`` writes ``DIR/epochs.csv``):
``epochs.csv`` (``run``, ``epoch``, ``train_objective``, ``R@K`` ... columns),
``runs.csv``, ``epoch_details.csv``, ``unrecognised.csv`` (lines not used),
``matlab_messages.csv`` (MATLAB warnings/errors in between) and ``report.txt`` (what was
read, what was not, with file and line numbers), plus ``run_info.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from converters.errors import MatConvNetError
from converters.matio.integrity import mat_v5_truncation
from logs.diary_parser import Run, parse_run
from logs.errors import LogFormatError
from logs.frames import (
    BASE_COLUMNS,
    epoch_details_table,
    epochs_table,
    matlab_messages_table,
    order_epoch_columns,
    runs_table,
    unrecognised_table,
)
from logs.simulator import SAMPLES_DIR
from logs.stats import stats_epochs
from reproduce.errors import InputError
from reproduce.outputs import command_dir, write_csv, write_json, write_text

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^net-epoch-(\d+)\.mat$")
_DIARY = re.compile(r"^diary_\d+\.txt$", re.IGNORECASE)
#: Other text files a folder search takes as logs (each one a run of its own).
_OTHER_LOGS = (".txt", ".log")


@dataclass
class LogsResult:
    """What ``logs_command`` read and wrote."""

    runs: list[Run]
    stats_runs: list[str]
    epochs: pd.DataFrame
    runs_frame: pd.DataFrame
    unrecognised: pd.DataFrame
    matlab_messages: pd.DataFrame
    report: str
    files: dict[str, Path] = field(default_factory=dict)
    bad_files: list[BadFile] = field(default_factory=list)


def collect_inputs(paths: Sequence[str | os.PathLike[str]]) -> tuple[dict[Path, list[Path]],
                                                                      dict[Path, Path]]:
    """Diaries grouped by folder, and the newest checkpoint per folder, from files/folders.

    A text file given by name is a diary even if it is not called ``diary_NNN.txt`` (it
    then forms a run on its own). Raises ``InputError`` for a path that does not exist.
    """
    diaries: dict[Path, list[Path]] = {}
    checkpoints: dict[Path, Path] = {}

    def add_checkpoint(path: Path) -> None:
        current = checkpoints.get(path.parent)
        if current is None or _epoch_of(path) > _epoch_of(current):
            checkpoints[path.parent] = path

    for given in paths:
        path = Path(given)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.is_file() and _DIARY.match(found.name):
                    diaries.setdefault(found.parent, []).append(found)
                elif found.is_file() and _CHECKPOINT.match(found.name):
                    add_checkpoint(found)
                elif found.is_file() and found.suffix.lower() in _OTHER_LOGS:
                    diaries.setdefault(found, []).append(found)  # a pasted log: own run
        elif _CHECKPOINT.match(path.name):
            add_checkpoint(path)
        elif _DIARY.match(path.name):
            diaries.setdefault(path.parent, []).append(path)
        else:
            diaries.setdefault(path, []).append(path)  # a lone text file: its own run
    return diaries, checkpoints


def _epoch_of(path: Path) -> int:
    """N of ``net-epoch-N.mat``."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def load_checkpoint_stats(path: Path) -> dict[str, Any]:
    """The ``stats`` variable of a checkpoint, read with the converters' MAT reader.

    A damaged file raises ``MatConvNetError`` (from the reader); a file cut short before
    ``stats`` (the MAT v5 reader then sees only the variables before the cut) is called
    truncated, and only an intact file without ``stats`` is said to lack it.
    """
    from converters.matio.read import load_mat  # reproduce may import converters

    tree = load_mat(path, variables=["stats"])
    if "stats" not in tree:
        cut = mat_v5_truncation(path)
        if cut is not None:
            raise InputError(f"{path}: truncated MAT file ({cut}); its stats cannot be read")
        raise InputError(f"{path}: checkpoint has no 'stats' variable (saved before the epoch "
                         "ended?)")
    return tree["stats"]


@dataclass
class BadFile:
    """An input file that could not be read; the others were used without it."""

    path: Path
    error: str


def read_logs(paths: Sequence[str | os.PathLike[str]]
              ) -> tuple[list[Run], pd.DataFrame, list[str], list[BadFile]]:
    """Parse every diary run and checkpoint under ``paths``.

    Returns the diary runs, the per-epoch table (diary runs and stats runs together), the
    names of the stats runs, and the files that could not be read (a binary diary, a damaged
    or truncated checkpoint): each is reported and the others are still used.
    """
    diaries, checkpoints = collect_inputs(paths)
    runs: list[Run] = []
    bad: list[BadFile] = []
    for _folder, files in tqdm(sorted(diaries.items()), desc="diaries", unit="run",
                              disable=None):
        try:
            run = parse_run(files)
        except LogFormatError as exc:
            log.warning("%s", exc)
            bad.append(BadFile(Path(files[0]), str(exc)))
            continue
        log.info("%s: %d epochs, %d unrecognised lines", run.name, len(run.epochs),
                 len(run.unrecognised))
        runs.append(run)
    by_folder = {run.files[0].parent: run.name for run in runs}
    frames = [epochs_table(runs)] if runs else []
    stats_names: list[str] = []
    for folder, checkpoint in sorted(checkpoints.items()):
        base = by_folder.get(folder, f"{folder.parent.name}/{folder.name}")
        name = f"{base} [stats {checkpoint.name}]"
        try:
            stats = stats_epochs(load_checkpoint_stats(checkpoint), name)
        except (InputError, MatConvNetError, LogFormatError) as exc:
            log.warning("%s", exc)
            bad.append(BadFile(checkpoint, str(exc)))
            continue
        frames.append(stats[BASE_COLUMNS])  # epochs.csv keeps its documented columns
        stats_names.append(name)
    if frames:
        epochs = order_epoch_columns(pd.concat(frames, ignore_index=True))
    else:
        epochs = order_epoch_columns(pd.DataFrame())
    return runs, epochs, stats_names, bad


def is_fastap_run(run: Run) -> bool:
    """Whether any diary of the run holds a line only a FastAP diary prints."""
    return any(d.recognised_fastap_lines for d in run.diaries)


def format_report(runs: Sequence[Run], stats_runs: Sequence[str], unrecognised: pd.DataFrame,
                  matlab_messages: pd.DataFrame, bad_files: Sequence[BadFile] = ()) -> str:
    """The human-readable report: files that could not be read, each run's summary, then
    every line that was not used and every MATLAB warning or error, with file and line."""
    parts = ["fastap logs report", ""]
    if bad_files:
        parts += [f"files not read: {len(bad_files)} (the other inputs were used)"]
        parts += [f"  {bad.error}" for bad in bad_files]
        parts += [""]
    if any(run.simulated for run in runs):
        parts += ["NOTE: runs marked SIMULATED come from logs/simulator.py, not from the "
                  "authors' diaries; their numbers are made up.", ""]
    parts += [run.summary() for run in runs]
    parts += [f"run {name}: per-epoch objective from checkpoint stats" for name in stats_runs]
    for title, frame in (("lines not used", unrecognised),
                         ("MATLAB warnings and errors", matlab_messages)):
        parts += ["", f"{title}: {len(frame)}"]
        parts += [f"  {row.file}:{row.line}: [{row.reason}] {row.text}"
                  for row in frame.itertuples(index=False)]
    return "\n".join(parts) + "\n"


def logs_command(paths: Sequence[str | os.PathLike[str]] | None, out: str | os.PathLike[str],
                 arguments: dict[str, Any] | None = None) -> LogsResult:
    """Parse ``paths`` (default: the shipped SIMULATED samples) and write the tables into ``out``.

    ``out`` receives the files directly (``out/epochs.csv``), with ``run_info.json``. Every
    input is read before anything is written: when nothing usable is found (no FastAP diary,
    no readable checkpoint stats) an ``InputError`` names the paths and ``out`` is left as
    it was. Unreadable files beside usable ones are listed in ``bad_files`` and the report.
    """
    paths = list(paths) if paths else [SAMPLES_DIR]
    runs, epochs, stats_runs, bad = read_logs(paths)
    where = ", ".join(str(p) for p in paths)
    if not runs and not stats_runs:
        problems = "; ".join(b.error for b in bad)
        raise InputError(f"no readable diary_NNN.txt, text file or net-epoch-N.mat found in: "
                         f"{where}" + (f" ({problems})" if problems else ""))
    if not stats_runs and not any(is_fastap_run(run) for run in runs):
        raise InputError(f"no FastAP diary in: {where} (the text files read, "
                         + ", ".join(str(f) for run in runs for f in run.files[:1])
                         + ", hold no line a FastAP MATLAB diary prints)")
    runs_frame = runs_table(runs)
    unrecognised = unrecognised_table(runs)
    messages = matlab_messages_table(runs)
    report = format_report(runs, stats_runs, unrecognised, messages, bad)
    out_dir = Path(out)
    # files go directly into `out` (the issue's `DIR/epochs.csv`), so `out` is the command
    # folder; run_info.json then names the command "logs", not the folder
    command_dir(out_dir.parent, out_dir.name,
                arguments or {"paths": [str(p) for p in paths], "out": str(out)})
    info = json.loads((out_dir / "run_info.json").read_text(encoding="utf-8"))
    write_json(out_dir / "run_info.json", {**info, "command": "logs"})
    files = {
        "epochs": write_csv(out_dir / "epochs.csv", epochs),
        "runs": write_csv(out_dir / "runs.csv", runs_frame),
        "epoch_details": write_csv(out_dir / "epoch_details.csv", epoch_details_table(runs)),
        "unrecognised": write_csv(out_dir / "unrecognised.csv", unrecognised),
        "matlab_messages": write_csv(out_dir / "matlab_messages.csv", messages),
        "report": write_text(out_dir / "report.txt", report),
    }
    return LogsResult(runs=runs, stats_runs=stats_runs, epochs=epochs, runs_frame=runs_frame,
                      unrecognised=unrecognised, matlab_messages=messages, report=report,
                      files=files, bad_files=bad)
