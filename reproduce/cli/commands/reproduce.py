"""``fastap reproduce``: the main job (see ``reproduce.cli.main_job``)."""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.main_job import reproduce
from reproduce.outputs import DEFAULT_OUT


def add_parser(subparsers: Any) -> None:
    """Register ``reproduce``."""
    parser = subparsers.add_parser(
        "reproduce", help="the main job: parity, conversion, logs, tables and figures",
        description="Run everything on the embedded defaults, or on real inputs when given. "
                    "Prints a summary of what was regenerated from what.")
    parser.add_argument("--models", help="folder of net-epoch-N.mat checkpoints "
                        "(default: a synthetic full-size ResNet-18 checkpoint)")
    parser.add_argument("--logs", nargs="+", metavar="DIR",
                        help="diary folders or files (default: the shipped SIMULATED samples)")
    parser.add_argument("--data", help="folder holding products/, inshop/, vid/ (or the "
                        "official folder names) for evaluating converted models")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output root (default: out)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job, print the summary, exit 1 if a check failed."""
    result = reproduce(models=args.models, logs=args.logs, data=args.data, out=args.out)
    print(result.summary, end="")
    print(f"summary written to {result.folder / 'summary.md'}")
    return 0 if result.ok else 1
