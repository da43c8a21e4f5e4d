"""``fastap reproduce``: the main job (see ``reproduce.cli.main_job``)."""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument
from reproduce.cli.main_job import reproduce


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
    add_out_argument(parser, "<out>/{parity,models,evaluate,logs,tables,plots}/ and summary.md")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job, print the summary, exit 1 if a check failed."""
    result = reproduce(models=args.models, logs=args.logs, data=args.data, out=args.out)
    print(result.summary, end="")
    print(f"summary written to {result.folder / 'summary.md'}")
    return 0 if result.ok else 1
