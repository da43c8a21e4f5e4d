"""``fastap plots``: training curves, published vs reproduced Recall@K, parity summary."""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument


def add_parser(subparsers: Any) -> None:
    """Register ``fastap plots``."""
    parser = subparsers.add_parser(
        "plots", help="PNG and PDF figures from logs, tables and the parity CSV",
        description="Writes <out>/plots/*.png and *.pdf. Each input is optional; the "
                    "figures of an input not given are skipped and reported; an input given "
                    "but missing or empty is an error.")
    parser.add_argument("--logs", nargs="*", default=None, metavar="DIR",
                        help="fastap logs output folders or diary folders")
    parser.add_argument("--tables", default=None, metavar="DIR",
                        help="fastap tables output folder (<out>/tables)")
    parser.add_argument("--parity", default=None, metavar="CSV",
                        help="parity CSV (<out>/parity/parity.csv)")
    add_out_argument(parser, "<out>/plots/*.png")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw and list the figures."""
    from reproduce.report.plots import plots_command

    result = plots_command(args.logs, args.tables, args.parity, args.out,
                           {k: v for k, v in vars(args).items() if not callable(v)})
    for name, value in result.items():
        shown = value if isinstance(value, str) else ", ".join(str(p) for p in value)
        print(f"{name}: {shown}")
    return 0
