"""Where commands put their results: one folder per command, written atomically.

Every command writes under ``<out>/<command>/`` and leaves ``run_info.json`` (resolved
arguments and library versions) beside its results. Files are written to a temporary name
in the same folder and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("out")
_VERSIONED = ("fastap-repro", "torch", "torchvision", "numpy", "scipy", "h5py", "pandas",
              "matplotlib")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
