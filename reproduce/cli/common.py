"""What every ``fastap`` subcommand shares: the ``--out``/``--force`` options, the output
checks, the one text-table formatter and the ``--quiet`` switch for progress bars."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from reproduce.errors import InputError
from reproduce.outputs import DEFAULT_OUT


def add_out_argument(parser: argparse.ArgumentParser, writes: str,
                     default: Path = DEFAULT_OUT) -> None:
    """``--out DIR`` (default ``out``, the project's one output root); ``writes`` says what."""
    parser.add_argument("--out", type=Path, default=default, metavar="DIR",
                        help=f"output folder; writes {writes} (default: {default})")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    """``--force``: replace output files that already exist (never an input file)."""
    parser.add_argument("--force", action="store_true",
                        help="replace existing output files (an output is never an input)")


def check_out_folder(out: str | os.PathLike[str], option: str = "--out") -> Path:
    """``out`` as a folder that can be created: an existing non-folder is the user's error."""
    folder = Path(out)
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise InputError(f"{option} {out}: {candidate} exists and is not a folder")
            break
    return folder


def check_outputs(outputs: Sequence[str | os.PathLike[str]],
                  inputs: Sequence[str | os.PathLike[str]], *, force: bool,
                  option: str = "-o/--output") -> None:
    """Refuse outputs that would destroy an input, or replace an existing file unasked."""
    for output in map(Path, outputs):
        for source in map(Path, inputs):
            if output.resolve() == source.resolve() or (
                    output.exists() and source.exists() and os.path.samefile(output, source)):
                raise InputError(f"{option} {output}: is the input {source}; choose another "
                                 "output file")
        if output.is_dir():
            raise InputError(f"{option} {output}: is a folder, expected a file name")
        if output.exists() and not force:
            raise InputError(f"{option} {output}: exists; pass --force to replace it")


def _cell(value: Any) -> str:
    """One table cell: floats in 3 significant digits (``nan``/``inf`` as such)."""
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows as an aligned plain-text table under ``header`` (every command prints this way)."""
    body = [[_cell(c) for c in row] for row in rows]
    lines = [list(header), *body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, every ``tqdm`` bar is shown only when ``enabled`` (``--quiet``)."""
    if enabled:
        yield
        return
    from tqdm import tqdm

    original = tqdm.__init__

    def silenced(self: tqdm, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True  # over any disable= the caller passed
        original(self, *args, **kwargs)

    tqdm.__init__ = silenced  # type: ignore[method-assign]
    try:
        yield
    finally:
        tqdm.__init__ = original  # type: ignore[method-assign]
