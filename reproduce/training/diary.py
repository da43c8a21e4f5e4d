"""The diary of a ``fastap train`` run, line for line in the authors' format.

One ``diary_NNN.txt`` per invocation (numbered on from the folder's newest, as the authors'
``diary`` calls did), written as the run goes (flushed per line, like MATLAB's ``diary``), so
``logs.diary_parser.parse_diaries`` reads our runs as it reads theirs. The lines are those of
``run_demo.m``, ``train_hard.m`` and ``evaluate_model.m`` (TRAINING_PIPELINE section 6,
docs/logs.md), formatted with the same ``sprintf`` patterns:

- ``disp(opts)``: the options block (names right-aligned);
- ``train_hard: resuming by loading epoch %d``;
- ``processEpoch: Epoch %d/%d: solver.adam LR=%e``, then ``%d meta-classes, %d batches per
  meta-class pair`` (``train_hard``), ``%d meta-classes, %d batches`` (``train_hard_vid``)
  or, for our class-balanced sampler, ``%d classes, %d batches`` (ours; the parser keeps it
  as an unrecognised line);
- progress ``%s-%s ep%02d: %3d/%3d (%d) %.1fHz obj: %.3f (%.3f)`` when more than
  ``progress_seconds`` passed since the last one (30 s in ``train_hard``);
- ``processEpoch: Epoch %d, Avg train obj = %g`` (mean of the batch objectives, NaNs
  dropped), ``saveState: saved: <expDir>/net-epoch-%d.mat``;
- ``postepoch:`` expID, identifier, date, ``GPU #g on host`` (``g`` = CUDA index + 1, 0 on
  the CPU) and the blank line of ``hostname``'s newline;
- evaluation: ``cnn_encode: Testing [arch] on N -> feats_l2``, ``Elapsed time is %f
  seconds.``, ``evaluate_model: [dataset] Recall ...`` and ``K: %4d, Recall: %.3f``;
- ``train_hard: Complete: %d epochs.``
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from logs.simulator import disp_struct, mformat

DIARY_PATTERN = re.compile(r"^diary_(\d+)\.txt$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def next_diary(folder: Path) -> Path:
    """``diary_NNN.txt`` with ``NNN`` one more than the newest in ``folder`` (001 first)."""
    numbers = [int(m.group(1)) for p in folder.glob("diary_*.txt")
               if (m := DIARY_PATTERN.match(p.name))]
    return folder / f"diary_{max(numbers, default=0) + 1:03d}.txt"


def matlab_date(t: float | None = None) -> str:
    """``datestr(now)``: ``02-Dec-2026 16:40:00`` (English month, whatever the locale)."""
    tm = time.localtime(t)
    return f"{tm.tm_mday:02d}-{_MONTHS[tm.tm_mon - 1]}-{tm.tm_year} " \
           f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def nan_free_mean(values: Sequence[float]) -> float:
    """``mean(objs(~isnan(objs)))``; NaN when every value is NaN (or none)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


class Diary:
    """Appends the authors' lines to one diary file (see the module docstring)."""

    def __init__(self, path: Path, *, train_hard: str = "train_hard") -> None:
        self.path = path
        self.train_hard = train_hard
        self._fh: IO[str] = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> Diary:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def lines(self, *texts: str) -> None:
        """Write lines as they are."""
        for text in texts:
            self._fh.write(text + "\n")

    def options(self, opts: dict[str, Any]) -> None:
        """``disp(opts)``."""
        self.lines(*disp_struct(opts))

    def resuming(self, epoch: int) -> None:
        """``%s: resuming by loading epoch %d``."""
        self.lines(f"{self.train_hard}: resuming by loading epoch {epoch}")

    def epoch_start(self, epoch: int, num_epochs: int, solver: str, lr: float,
                    batches_line: str) -> None:
        """``Epoch %d/%d: %s LR=%e`` and the batches line of the sampler."""
        self.lines(mformat("processEpoch: Epoch %d/%d: solver.%s LR=%e", epoch, num_epochs,
                           solver, lr), f"processEpoch: {batches_line}")

    def progress(self, dataset: str, mode: str, epoch: int, batch: int, num_batches: int,
                 batch_size: int, hz: float, obj: float, mean: float) -> None:
        """``%s-%s ep%02d: %3d/%3d (%d) %.1fHz obj: %.3f (%.3f)``."""
        self.lines(mformat("%s-%s ep%02d: %3d/%3d (%d) %.1fHz obj: %.3f (%.3f)", dataset, mode,
                           epoch, batch, num_batches, batch_size, hz, obj, mean))

    def epoch_end(self, epoch: int, average: float) -> float:
        """``Epoch %d, Avg train obj = %g``; returns the value as printed."""
        text = mformat("%g", average)
        self.lines(f"processEpoch: Epoch {epoch}, Avg train obj = {text}")
        return float(text)

    def saved(self, path: Path) -> None:
        """``saveState: saved: %s``."""
        self.lines(f"saveState: saved: {path}")

    def postepoch(self, exp_id: str, identifier: str, gpu: int) -> None:
        """``run_demo``'s post-epoch lines (``hostname`` keeps its newline: a blank line)."""
        self.lines(f"postepoch: {exp_id}", f"postepoch: {identifier}",
                   f"postepoch: {matlab_date()}", f"postepoch: GPU #{gpu} on "
                   f"{socket.gethostname()}", "")

    def evaluation(self, dataset: str, arch: str, count: int, seconds: float,
                   Ks: Sequence[int], recall: Sequence[float], subset: str | None = None
                   ) -> dict[int, float]:
        """The evaluation block (``subset``: VehicleID's ``Small`` ...); returns Recall@K as
        printed (``%.3f``)."""
        where = f" on [{subset}]" if subset else ""
        self.lines(f"cnn_encode: Testing [{arch}] on {count} -> feats_l2",
                   mformat("Elapsed time is %f seconds.", seconds),
                   f"evaluate_model: [{dataset}] Recall{where} ...")
        printed = {}
        for k, r in zip(Ks, recall, strict=True):
            text = mformat("%.3f", float(r))
            self.lines(f"K: {int(k):4d}, Recall: {text}")
            printed[int(k)] = float(text)
        return printed

    def complete(self, epochs: int) -> None:
        """``%s: Complete: %d epochs.``"""
        self.lines(f"{self.train_hard}: Complete: {epochs} epochs.")
