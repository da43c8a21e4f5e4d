"""Turn MATLAB diary files (``diary_NNN.txt``) of one experiment folder into a run record.

:func:`parse_diary` reads one file line by line with :mod:`logs.diary_lines` and keeps a
little state: which indented block a ``name: value`` line belongs to, the epoch being
trained, the evaluation subset being printed. :func:`parse_run` merges the diaries of one
folder in order: a resumed run (``train_hard: resuming by loading epoch N``) writes the next
diary and re-trains the epochs after its checkpoint, so a later diary's epoch replaces an
earlier one's, and the replacement is noted.

Nothing in a diary is fatal: unknown lines, MATLAB errors, a truncated last line are counted
and reported with their file and line number. Only a file that is not text at all raises
:class:`logs.errors.LogFormatError`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logs import diary_lines as dl
from logs.errors import LogFormatError

log = logging.getLogger(__name__)

_DIARY_NUMBER = re.compile(r"^diary_(\d+)\.txt$", re.IGNORECASE)
#: The prefix the simulator puts in its runs' identifiers (``opts.prefix``).
SIMULATED_PREFIX = "simulated"


#: How much of a line the reports quote; a longer line is cut and its length stated.
MAX_QUOTED_CHARS = 500
#: Lines longer than this are not matched against the diary patterns (no diary line is).
MAX_LINE_CHARS = 100_000


def quote(text: str) -> str:
    """``text`` as the reports show it: cut after ``MAX_QUOTED_CHARS`` with its length said."""
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return (text[:MAX_QUOTED_CHARS]
            + f" ... [cut: the line is {len(text):,} characters long]")


@dataclass
class LineIssue:
    """A line the parser could not use: where it is, what it says, why it was not used.

    ``text`` is quoted with :func:`quote`, so a runaway line does not fill the reports.
    """

    file: str
    line: int
    text: str
    reason: str

    def __post_init__(self) -> None:
        self.text = quote(self.text)


@dataclass
class ProgressRecord:
    """One ``<dataset>-<mode> epNN: b/B (M) xHz obj: o (mean)`` line."""

    mode: str
    batch: int
    batches: int
    batch_size: int
    hz: float
    objective: float
    running_mean: float


@dataclass
class EpochRecord:
    """What one diary says about one training epoch (and the evaluation after it)."""

    epoch: int
    source: str
    num_epochs: int | None = None
    solver: str | None = None
    lr: float | None = None
    mode: str | None = None
    meta_classes: int | None = None
    batches_per_pair: int | None = None
    progress: list[ProgressRecord] = field(default_factory=list)
    train_objective: float | None = None
    checkpoint: str | None = None
    date: str | None = None
    host: str | None = None
    recall: dict[str, float] = field(default_factory=dict)
    eval_seconds: float = 0.0

    @property
    def evaluated(self) -> bool:
        """Whether a Recall@K block was printed after this epoch."""
        return bool(self.recall)


@dataclass
class DiaryRun:
    """Everything read from one diary file."""

    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    imdb_images: dict[str, Any] = field(default_factory=dict)
    epochs: dict[int, EpochRecord] = field(default_factory=dict)
    resumed_from: int | None = None
    completed: int | None = None
    model_seconds: float | None = None
    imdb: str | None = None
    imdb_seconds: float | None = None
    lines: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    unrecognised: list[LineIssue] = field(default_factory=list)
    matlab_messages: list[LineIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recognised_fastap_lines(self) -> int:
        """Lines of kinds only a FastAP diary prints (not blanks, not MATLAB's own output)."""
        generic = {dl.BLANK, dl.ELAPSED, dl.MATLAB_ERROR, dl.MATLAB_TRACE, dl.MATLAB_WARNING,
                   dl.DISPLAY_HEADER, dl.FIELD, dl.WHOS_HEADER, dl.WHOS_ROW}
        return sum(n for kind, n in self.counts.items()
                   if kind in dl.ALL_KINDS and kind not in generic)


@dataclass
class Run:
    """One experiment: the diaries of one folder merged in order."""

    name: str
    diaries: list[DiaryRun]
    options: dict[str, Any]
    epochs: dict[int, EpochRecord]
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """The diary files, in merge order."""
        return [d.path for d in self.diaries]

    @property
    def simulated(self) -> bool:
        """Whether the run was written by :mod:`logs.simulator` (its identifier says so)."""
        prefix = str(self.options.get("prefix") or "")
        identifier = str(self.options.get("identifier") or "")
        return prefix.startswith(SIMULATED_PREFIX) or identifier.startswith(SIMULATED_PREFIX)

    @property
    def unrecognised(self) -> list[LineIssue]:
        """Unknown or unusable lines of every diary, in order."""
        return [issue for d in self.diaries for issue in d.unrecognised]

    @property
    def matlab_messages(self) -> list[LineIssue]:
        """MATLAB warnings and errors printed in between, in order."""
        return [issue for d in self.diaries for issue in d.matlab_messages]

    def summary(self) -> str:
        """A few lines a reader can check: files, epochs, evaluations, problems."""
        evaluated = [e for e, rec in sorted(self.epochs.items()) if rec.evaluated]
        lines = [
            f"run {self.name}" + (" [SIMULATED sample, not the authors' log]"
                                  if self.simulated else ""),
            "  files: " + ", ".join(str(p) for p in self.files),
            f"  epochs: {_span(sorted(self.epochs))}; evaluated: {_span(evaluated)}",
            f"  lines: {sum(d.lines for d in self.diaries)}, unrecognised: "
            f"{len(self.unrecognised)}, MATLAB warnings/errors: {len(self.matlab_messages)}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _span(values: Sequence[int]) -> str:
    """``1-12, 14`` (consecutive values as ranges) or ``none``."""
    if not values:
        return "none"
    parts: list[str] = []
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


# ---- reading -------------------------------------------------------------------------------
def read_lines(path: Path) -> tuple[list[str], bool]:
    """The file's lines without line ends (LF or CRLF) and whether the last one was ended.

    Raises :class:`LogFormatError` for a binary file (a NUL byte anywhere: MATLAB diaries
    never hold one). Text that is not UTF-8 is read as Latin-1 (MATLAB on Windows writes its
    code page).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read diary: {exc.strerror or exc}") from exc
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise LogFormatError(f"{path}: binary file (NUL byte at offset {nul}), not a MATLAB "
                             "diary")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    pieces = text.split("\n")
    terminated = pieces[-1] == ""
    if terminated:
        pieces.pop()
    lines = [p[:-1] if p.endswith("\r") else p for p in pieces]
    return lines, terminated or not lines


def parse_diary(path: str | Path) -> DiaryRun:
    """Parse one diary file into a :class:`DiaryRun`; unknown lines are reported, not fatal."""
    return _DiaryReader(Path(path)).read()


class _DiaryReader:
    """Line-by-line state for :func:`parse_diary`."""

    def __init__(self, path: Path) -> None:
        self.run = DiaryRun(path=path)
        self.block: str | None = "options"  # disp(opts) comes first
        self.epoch: EpochRecord | None = None
        self.subset: str | None = None
        self.after_error_in = False

    def read(self) -> DiaryRun:
        lines, terminated = read_lines(self.run.path)
        self.run.lines = len(lines)
        for number, text in enumerate(lines, start=1):
            if number == len(lines) and not terminated:
                self.issue(number, text, "truncated last line (no line end): not used")
                self.run.counts["truncated"] += 1
                continue
            self.line(number, text)
        if self.run.lines and self.run.recognised_fastap_lines == 0:
            self.run.notes.append(
                f"{self.run.path.name}: no FastAP diary line recognised in {self.run.lines} "
                "lines: not a FastAP MATLAB diary (foreign format?)")
        return self.run

    def issue(self, number: int, text: str, reason: str) -> None:
        self.run.unrecognised.append(LineIssue(self.run.path.name, number, text, reason))

    def line(self, number: int, text: str) -> None:
        if len(text) > MAX_LINE_CHARS:
            self.issue(number, text, f"line of {len(text):,} characters, longer than any "
                       "diary line: not used")
            self.run.counts["unrecognised"] += 1
            self.block = None
            return
        parsed = dl.classify(text)
        if parsed is None:
            if self.after_error_in:
                # the source line MATLAB echoes under `Error in f (line N)`
                self.run.counts["matlab_error"] += 1
                self.run.matlab_messages.append(
                    LineIssue(self.run.path.name, number, text, "matlab_error"))
                self.after_error_in = False
                return
            self.issue(number, text, "unrecognised line")
            self.run.counts["unrecognised"] += 1
            self.block = None
            return
        self.after_error_in = parsed.kind == dl.MATLAB_ERROR and "Error in " in text
        self.run.counts[parsed.kind] += 1
        handler = getattr(self, f"on_{parsed.kind}", None)
        if handler is not None:
            handler(number, text, parsed.data)
        # which block the next indented `name: value` lines belong to
        if parsed.kind == dl.IMDB_LOADED:
            self.block = "imdb_images"  # disp(imdb.images) follows
        elif parsed.kind == dl.DISPLAY_HEADER:
            self.block = "display"
        elif parsed.kind not in (dl.FIELD, dl.BLANK):
            self.block = None

    # ---- handlers (one per kind that carries information) ---------------------------------
    def on_field(self, number: int, text: str, data: dict[str, Any]) -> None:
        if self.block == "options":
            self.run.options[data["name"]] = data["value"]
        elif self.block == "imdb_images":
            self.run.imdb_images[data["name"]] = data["raw"]
        elif self.block != "display":
            self.issue(number, text, "'name: value' line outside disp(opts), "
                       "disp(imdb.images) or a display block: not used")

    def on_model(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.model_seconds = data["seconds"]

    def on_imdb_name(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.imdb = data["imdb"]

    def on_imdb_loaded(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.imdb_seconds = data["seconds"]

    def on_resume(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.resumed_from = data["epoch"]

    def on_complete(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.completed = data["epochs"]

    def on_epoch_start(self, number: int, text: str, data: dict[str, Any]) -> None:
        epoch = data["epoch"]
        if epoch in self.run.epochs:
            self.run.notes.append(f"{self.run.path.name}:{number}: epoch {epoch} started again; "
                                  "the later record is kept")
        self.epoch = EpochRecord(epoch=epoch, source=self.run.path.name,
                                 num_epochs=data["num_epochs"], solver=data["solver"],
                                 lr=data["lr"])
        self.run.epochs[epoch] = self.epoch
        self.subset = None

    def current(self, number: int, text: str, epoch: int | None = None) -> EpochRecord | None:
        """The epoch a line belongs to (the one named by the line, else the current one)."""
        if epoch is not None and (self.epoch is None or self.epoch.epoch != epoch):
            if epoch not in self.run.epochs:
                self.run.epochs[epoch] = EpochRecord(epoch=epoch, source=self.run.path.name)
                self.run.notes.append(f"{self.run.path.name}:{number}: epoch {epoch} has no "
                                      "'Epoch N/M' line before this one")
            self.epoch = self.run.epochs[epoch]
        if self.epoch is None:
            self.issue(number, text, "belongs to an epoch but comes before any epoch: not used")
        return self.epoch

    def on_meta_classes(self, number: int, text: str, data: dict[str, Any]) -> None:
        record = self.current(number, text)
        if record is not None:
            record.meta_classes = data["meta_classes"]
            record.batches_per_pair = data.get("batches_per_pair")

    def on_progress(self, number: int, text: str, data: dict[str, Any]) -> None:
        record = self.current(number, text, data["epoch"])
        if record is None:
            return
        record.mode = data["mode"]
        record.progress.append(ProgressRecord(
            mode=data["mode"], batch=data["batch"], batches=data["batches"],
            batch_size=data["batch_size"], hz=float(data["hz"]), objective=float(data["obj"]),
            running_mean=float(data["mean"])))

    def on_epoch_end(self, number: int, text: str, data: dict[str, Any]) -> None:
        record = self.current(number, text, data["epoch"])
        if record is None:
            return
        if data["mode"] != "train":
            self.issue(number, text, f"average objective of mode {data['mode']!r}: not used")
            return
        record.train_objective = float(data["objective"])

    def on_checkpoint(self, number: int, text: str, data: dict[str, Any]) -> None:
        record = self.current(number, text, data["epoch"])
        if record is not None:
            record.checkpoint = data["path"]

    def on_postepoch(self, number: int, text: str, data: dict[str, Any]) -> None:
        if self.epoch is None:
            return  # the final post-epoch block of a run that trained nothing
        if data["what"] == "date":
            self.epoch.date = data["date"]
        elif data["what"] == "gpu":
            self.epoch.host = data["host"].strip()

    def on_encode(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.current(number, text)

    def on_eval_header(self, number: int, text: str, data: dict[str, Any]) -> None:
        subset = data.get("subset")
        self.subset = subset.lower() if subset else None

    def on_elapsed(self, number: int, text: str, data: dict[str, Any]) -> None:
        if self.epoch is not None:
            self.epoch.eval_seconds += float(data["seconds"])

    def on_recall(self, number: int, text: str, data: dict[str, Any]) -> None:
        record = self.current(number, text)
        if record is None:
            return
        key = recall_column(data["K"], self.subset)
        if key in record.recall and record.recall[key] != float(data["recall"]):
            self.run.notes.append(f"{self.run.path.name}:{number}: {key} of epoch "
                                  f"{record.epoch} printed again with another value; the "
                                  "later value is kept")
        record.recall[key] = float(data["recall"])

    def on_matlab_warning(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.matlab_messages.append(LineIssue(self.run.path.name, number, text,
                                                  "matlab_warning"))

    def on_matlab_error(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.matlab_messages.append(LineIssue(self.run.path.name, number, text,
                                                  "matlab_error"))

    def on_matlab_trace(self, number: int, text: str, data: dict[str, Any]) -> None:
        self.run.matlab_messages.append(LineIssue(self.run.path.name, number, text,
                                                  "matlab_trace"))


def recall_column(K: int, subset: str | None = None) -> str:
    """The epochs-table column of Recall@K: ``R@1``, or ``small R@1`` for a VehicleID subset."""
    return f"{subset} R@{K}" if subset else f"R@{K}"


# ---- merging -------------------------------------------------------------------------------
def diary_sort_key(path: Path) -> tuple[int, str]:
    """``diary_002.txt`` after ``diary_001.txt``; other names after, by name."""
    match = _DIARY_NUMBER.match(path.name)
    return (int(match.group(1)) if match else 10**9, path.name)


def run_name(options: dict[str, Any], paths: Sequence[Path]) -> str:
    """``<expID>/<identifier>`` from the options, else the folder (or file) names."""
    exp_id, identifier = options.get("expID"), options.get("identifier")
    if isinstance(exp_id, str) and isinstance(identifier, str) and exp_id and identifier:
        return f"{exp_id}/{identifier}"
    first = paths[0]
    if _DIARY_NUMBER.match(first.name):
        parent = first.parent
        return f"{parent.parent.name}/{parent.name}" if parent.parent.name else parent.name
    return first.stem


def parse_run(paths: Iterable[str | Path], name: str | None = None) -> Run:
    """Parse and merge the diaries of one experiment folder (sorted by their number)."""
    ordered = sorted((Path(p) for p in paths), key=diary_sort_key)
    if not ordered:
        raise LogFormatError("parse_run: no diary files given")
    diaries = [parse_diary(p) for p in ordered]
    return merge_diaries(diaries, name)


def merge_diaries(diaries: Sequence[DiaryRun], name: str | None = None) -> Run:
    """Merge parsed diaries of one run in the given order (later epochs replace earlier)."""
    options: dict[str, Any] = {}
    epochs: dict[int, EpochRecord] = {}
    notes: list[str] = []
    previous: DiaryRun | None = None
    for diary in diaries:
        notes.extend(diary.notes)
        for key, value in diary.options.items():
            if key in options and options[key] != value and key != "prefix":
                notes.append(f"{diary.path.name}: option {key} changed from {options[key]!r} "
                             f"to {value!r}; the later value is kept")
        options.update(diary.options)
        if diary.resumed_from is not None:
            _check_resume(diary, previous, epochs, notes)
        for epoch, record in sorted(diary.epochs.items()):
            if epoch in epochs:
                notes.append(f"epoch {epoch} of {epochs[epoch].source} replaced by "
                             f"{record.source} (re-trained after resuming)")
            epochs[epoch] = record
        previous = diary
    nan_epochs = [e for e, r in sorted(epochs.items())
                  if r.train_objective is not None and r.train_objective != r.train_objective]
    if nan_epochs:
        notes.append("average train objective logged as NaN in epochs " + _span(nan_epochs))
    paths = [d.path for d in diaries]
    run = Run(name=name or run_name(options, paths), diaries=list(diaries), options=options,
              epochs=dict(sorted(epochs.items())), notes=notes)
    if run.simulated:
        run.notes.insert(0, "SIMULATED: written by logs.simulator, not an authors' diary")
    return run


def _check_resume(diary: DiaryRun, previous: DiaryRun | None,
                  epochs: dict[int, EpochRecord], notes: list[str]) -> None:
    """Note a resume and anything odd about it (no earlier diary, no saved checkpoint)."""
    start = diary.resumed_from
    notes.append(f"{diary.path.name}: resumed from the checkpoint of epoch {start}")
    if previous is None:
        notes.append(f"{diary.path.name}: resumes from epoch {start} but no earlier diary "
                     "was given")
        return
    saved = epochs.get(start)
    if saved is None or saved.checkpoint is None:
        notes.append(f"{diary.path.name}: resumes from epoch {start} whose checkpoint save "
                     "is not in the earlier diaries")


def parse_diaries(source: str | Path | Iterable[str | Path], name: str | None = None) -> Run:
    """One run from an experiment folder (its ``diary_*.txt``) or from the diary files given.

    The public entry point of ``logs``: the same as :func:`parse_run`, which takes files only.
    """
    if isinstance(source, str | Path) and Path(source).is_dir():
        found = sorted(Path(source).glob("diary_*.txt"), key=diary_sort_key)
        if not found:
            raise LogFormatError(f"{source}: no diary_*.txt files in this folder")
        return parse_run(found, name)
    return parse_run([source] if isinstance(source, str | Path) else source, name)
