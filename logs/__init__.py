"""The authors' MATLAB training diaries and checkpoint ``stats`` as tables.

Public entry points: ``parse_diaries`` (an experiment folder or diary files -> ``Run``),
``parse_diary`` (one file), ``stats_epochs`` (a checkpoint's ``stats`` -> per-epoch rows) and
``epochs_table`` / ``runs_table`` (parsed runs -> pandas tables). Imported on first use.
"""

from __future__ import annotations

from converters.lazy import lazy_exports

_LAZY = {
    "parse_diaries": "logs.diary_parser",
    "parse_diary": "logs.diary_parser",
    "Run": "logs.diary_parser",
    "stats_epochs": "logs.stats",
    "epochs_table": "logs.frames",
    "runs_table": "logs.frames",
    "LogFormatError": "logs.errors",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports("logs", _LAZY)
