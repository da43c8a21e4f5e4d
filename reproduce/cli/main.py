"""The ``fastap`` dispatcher: argparse subcommands, one module each in ``cli.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from converters.errors import FastAPReproError
from reproduce.cli.commands import SUBCOMMANDS
from reproduce.cli.common import progress_bars

log = logging.getLogger("fastap")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


def build_parser() -> argparse.ArgumentParser:
    """The full ``fastap`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fastap",
        description="MATLAB-parity reproduction toolkit for FastAP (Cakir et al., CVPR 2019).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"reproduce.cli.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastap``: the project's errors and ``OSError`` end with one line and exit 2.

A failed check exits 1, Ctrl-C 130; any other exception is a bug and keeps its traceback.
"""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with progress_bars(not args.quiet):
            status = args.func(args)
    except FastAPReproError as exc:  # the user's situation: one line naming the cause
        return _fail(args.command, str(exc), exc.exit_status)
    except OSError as exc:  # a path that cannot be read or written (the message names it)
        return _fail(args.command, str(exc), EXIT_BAD_INPUT)
    except MemoryError:
        return _fail(args.command, "out of memory: use a smaller --batch (or --chunk) and retry",
                     EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted (finished outputs and caches are kept; "
                                   "run the same command again to resume)", EXIT_INTERRUPTED)
    return int(status or 0)


def _fail(command: str, message: str, status: int) -> int:
    """Print ``fastap COMMAND: error: MESSAGE`` on stderr and return the exit status."""
    print(f"fastap {command}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
