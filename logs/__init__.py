"""The authors' MATLAB training diaries and checkpoint ``stats`` as tables.

Public entry points: ``parse_diaries`` (an experiment folder or diary files -> ``Run``),
``parse_diary`` (one file), ``stats_epochs`` (a checkpoint's ``stats`` -> per-epoch rows) and
``epochs_table`` / ``runs_table`` (parsed runs -> pandas tables). Imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    """Import an entry point from the module that defines it on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'logs' has no attribute {name!r}")
