"""``fastap logs PATH... --out DIR``: diaries and checkpoint stats -> ``DIR/epochs.csv`` etc."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reproduce.cli.common import add_out_argument
from reproduce.outputs import DEFAULT_OUT


def add_parser(subparsers: Any) -> None:
    """Register ``fastap logs``."""
    parser = subparsers.add_parser(
        "logs", help="parse MATLAB diaries / checkpoint stats into epochs.csv and runs.csv",
        description="Parse diary_NNN.txt files (folders are searched recursively; the diaries "
                    "of one folder are one run, merged across resumes) and net-epoch-N.mat "
                    "stats. Writes DIR/epochs.csv, runs.csv, epoch_details.csv, "
                    "unrecognised.csv, matlab_messages.csv and report.txt. Without PATH: the "
                    "shipped SIMULATED sample diaries. A file that cannot be read (binary, "
                    "truncated) is reported and the others are used (exit status 1).")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="diary files, net-epoch-N.mat files or folders")
    add_out_argument(parser, "the tables directly into DIR", default=DEFAULT_OUT / "logs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse, write, print the report's summary lines; 1 when some input could not be read
    (the others were used), the unreadable files named on stderr."""
    from reproduce.report.log_tables import logs_command

    result = logs_command(args.paths, args.out,
                          {k: v for k, v in vars(args).items() if not callable(v)})
    for run_ in result.runs:
        print(run_.summary())
    for name in result.stats_runs:
        print(f"run {name}: per-epoch objective from checkpoint stats")
    print(f"{len(result.unrecognised)} lines not used, {len(result.matlab_messages)} MATLAB "
          f"warnings/errors (see {result.files['report']})")
    print(f"wrote {result.files['epochs']} ({len(result.epochs)} rows), "
          f"{result.files['runs']}")
    for bad in result.bad_files:
        print(f"fastap logs: not read: {bad.error}", file=sys.stderr)
    return 1 if result.bad_files else 0
