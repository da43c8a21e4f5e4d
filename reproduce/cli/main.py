"""The ``fastap`` dispatcher: argparse subcommands, one module each in ``cli.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from reproduce.cli.commands import SUBCOMMANDS

log = logging.getLogger("fastap")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The full ``fastap`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fastap",
        description="MATLAB-parity reproduction toolkit for FastAP (Cakir et al., CVPR 2019).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"reproduce.cli.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastap``; bad input ends with a one-line error and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        status = args.func(args)
    except (ValueError, OSError, KeyError) as exc:  # bad input: name it, exit non-zero
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"fastap {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
