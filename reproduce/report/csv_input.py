"""Reading the CSV files users hand to ``fastap tables`` / ``fastap plots``, with errors that
name the file, the line and the column.

pandas reports a binary file as ``'utf-8' codec can't decode byte 0x89`` and a bad number
as ``could not convert string to float: 'abc'``, naming neither the file nor where in it;
these helpers turn both into an ``InputError`` that does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from reproduce.errors import InputError

#: Line of the first data row (line 1 is the header).
FIRST_DATA_LINE = 2


def read_csv_file(path: str | os.PathLike[str], what: str) -> pd.DataFrame:
    """The CSV at ``path`` (``what`` says what it should be, for the messages)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file ({what}): byte {exc.start} cannot be "
                         f"decoded as UTF-8") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: empty file, expected a {what}") from exc
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: malformed CSV ({what}): {exc}") from exc


def line_of(index: Any) -> int:
    """The file line of a row read by :func:`read_csv_file` (default RangeIndex)."""
    return int(index) + FIRST_DATA_LINE


def number(value: Any, path: str | os.PathLike[str], index: Any, column: str) -> float:
    """``value`` as a float; a cell that is not a number names file, line and column."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise InputError(f"{path}:{line_of(index)}: column {column!r}: {value!r} is not a "
                         "number") from None


def check_numeric(frame: pd.DataFrame, path: str | os.PathLike[str],
                  columns: Iterable[str]) -> pd.DataFrame:
    """Convert ``columns`` (those present) to float, naming the first cell that is not a
    number; empty cells stay NaN."""
    for column in columns:
        if column not in frame.columns:
            continue
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna() & (
            frame[column].astype(str).str.strip() != "")
        if bad.any():
            index = bad[bad].index[0]
            number(frame.at[index, column], path, index, column)  # raises, naming the cell
        frame[column] = converted.astype("float64")
    return frame


def present(value: Any) -> bool:
    """Not None/NaN/empty."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip()) and value.strip().lower() != "nan"
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False
