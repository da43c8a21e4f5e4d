"""``fastap inspect FILE [--json]``: what a MatConvNet ``.mat`` file holds."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from converters.mcn.inspect_report import format_inspection, inspect_file


def inspect(file: str | os.PathLike[str], as_json: bool = False) -> str:
    """The inspection report of ``file`` as text (or JSON when ``as_json``)."""
    report = inspect_file(file)
    if as_json:
        return json.dumps(report, indent=2) + "\n"
    return format_inspection(report)


def add_parser(subparsers: Any) -> None:
    """Register ``inspect``."""
    parser = subparsers.add_parser(
        "inspect", help="show a MatConvNet .mat file's format, variables, layers, params, "
                        "meta and training stats")
    parser.add_argument("file", help="a MatConvNet .mat file (v5/v7 or v7.3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; bad input raises (the CLI turns it into exit status 2)."""
    print(inspect(args.file, as_json=args.json), end="")
    return 0
