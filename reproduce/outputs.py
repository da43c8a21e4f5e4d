"""Where commands put their results: one folder per command, written atomically.

Every command writes under ``<out>/<command>/`` and leaves ``run_info.json`` (resolved
arguments and library versions) beside its results. Files are written to a temporary name
in the same folder and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from converters.atomic_file import atomic_path

DEFAULT_OUT = Path("out")
_VERSIONED = ("fastap-repro", "torch", "torchvision", "numpy", "scipy", "h5py", "pandas",
              "matplotlib")


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and paths become plain values)."""
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries whose behaviour the results depend on."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def command_dir(out: str | os.PathLike[str] | None, command: str,
                arguments: Mapping[str, Any] | Any = None) -> Path:
    """Create ``<out>/<command>/`` and record the run's arguments and versions in it."""
    folder = Path(out if out is not None else DEFAULT_OUT) / command
    folder.mkdir(parents=True, exist_ok=True)
    if arguments is not None and not isinstance(arguments, Mapping):
        arguments = vars(arguments)
    args = {k: v for k, v in dict(arguments or {}).items() if not callable(v)}
    write_json(folder / "run_info.json", {
        "command": command,
        "arguments": args,
        "argv": sys.argv,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    })
    return folder


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and paths into JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
