"""``fastap parity``: compare the PyTorch port with every saved MATLAB fixture."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from reproduce.outputs import DEFAULT_OUT
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder; writes <out>/parity/parity.csv (default: out)")
    parser.set_defaults(func=run)


def _fmt(value: float) -> str:
    """An error in the table: scientific, ``nan`` or ``inf`` as such."""
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def format_table(rows: Sequence[ParityRow]) -> str:
    """The rows as an aligned text table (case, quantity, errors, tolerance, verdict)."""
    header = ("case", "quantity", "max abs", "max rel", "tolerance", "verdict")
    body = [(r.case, r.quantity, _fmt(r.max_abs_err), _fmt(r.max_rel_err), r.tolerance,
             r.verdict.upper() if not r.passed else r.verdict) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the check, print the table and a summary; 1 if anything failed."""
    from reproduce.parity.run import run_parity

    fixtures = list(args.fixtures) if args.fixtures else list(DEFAULT_FIXTURE_DIRS)
    rows, ok = run_parity(fixtures, args.out)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed:
        if r.note:
            print(f"FAIL {r.case} {r.quantity}: {r.note}")
    cases = len({r.case for r in rows})
    print(f"parity: {len(rows) - len(failed)} of {len(rows)} comparisons passed over {cases} "
          f"cases ({'OK' if ok else f'{len(failed)} FAILED'}); "
          f"table in {Path(args.out) / 'parity' / 'parity.csv'}")
    return 0 if ok else 1
