"""``fastap parity``: compare the PyTorch port with every saved MATLAB fixture."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from reproduce.cli.common import add_out_argument, format_table
from reproduce.parity.row import ParityRow
from reproduce.paths import DEFAULT_FIXTURE_DIRS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fastap parity``."""
    parser = subparsers.add_parser(
        "parity", help="check the FastAP loss, Recall@K and training against saved MATLAB values",
        description="Compare every saved quantity of every fixture (.mat) in the given "
                    "folders with our computation; exit 1 if any comparison fails.")
    parser.add_argument("--fixtures", nargs="+", type=Path, metavar="DIR", default=None,
                        help="fixture folders or .mat files (default: the "
                             "shipped fastap_matlab, recall_matlab and training_matlab "
                             "fixtures)")
    add_out_argument(parser, "<out>/parity/parity.csv")
    parser.set_defaults(func=run)


def format_rows(rows: Sequence[ParityRow]) -> str:
    """The rows as the aligned text table (case, quantity, errors, tolerance, verdict)."""
    header = ("case", "quantity", "max abs", "max rel", "tolerance", "verdict")
    return format_table(header, [(r.case, r.quantity, _sci(r.max_abs_err), _sci(r.max_rel_err),
                                  r.tolerance, r.verdict if r.passed else r.verdict.upper())
                                 for r in rows])


def _sci(value: float) -> str:
    """An error in the table: scientific, ``nan`` or ``inf`` as such."""
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def run(args: argparse.Namespace) -> int:
    """Run the check, print the table and a summary; 1 if anything failed."""
    from reproduce.parity.run import run_parity

    fixtures = list(args.fixtures) if args.fixtures else list(DEFAULT_FIXTURE_DIRS)
    rows, ok = run_parity(fixtures, args.out)
    print(format_rows(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed:
        if r.note:
            print(f"FAIL {r.case} {r.quantity}: {r.note}")
    cases = len({r.case for r in rows})
    print(f"parity: {len(rows) - len(failed)} of {len(rows)} comparisons passed over {cases} "
          f"cases ({'OK' if ok else f'{len(failed)} FAILED'}); "
          f"table in {Path(args.out) / 'parity' / 'parity.csv'}")
    return 0 if ok else 1
