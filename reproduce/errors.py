"""The project's error hierarchy for ``reproduce`` code (defined in ``converters.errors``)."""

from __future__ import annotations

from converters.errors import (
    CheckFailedError,
    DatasetError,
    FastAPReproError,
    InputError,
    InputFileError,
    LogFormatError,
    MatConvNetError,
)

__all__ = ["CheckFailedError", "DatasetError", "FastAPReproError", "InputError", "InputFileError",
           "LogFormatError", "MatConvNetError"]
