"""``fastap verify FILE``: the converted model against the reference executor, var by var.

Exit status 1 when any var is beyond the tolerance of the dtype; the work is
:func:`converters.fastap.verify.verify`.
"""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument, format_table


def add_parser(subparsers: Any) -> None:
    """Register ``verify``."""
    parser = subparsers.add_parser(
        "verify", help="run the converted model beside the reference executor and compare "
                       "every variable (exit 1 beyond tolerance)")
    parser.add_argument("file", help="a MatConvNet .mat file (FastAP checkpoint or any "
                                     "supported network)")
    parser.add_argument("--input", metavar="NPY",
                        help=".npy holding the input in MATLAB order (H x W x C x N), or .npz "
                             "with one array per input var; default: random")
    parser.add_argument("--batch", type=int, default=2, help="random input batch (default 2)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the converted model (reference: float64)")
    parser.add_argument("--seed", type=int, default=0, help="random input seed")
    add_out_argument(parser, "<out>/verify/comparison.csv")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the comparison and write ``<out>/verify/comparison.csv``; 1 when beyond tolerance."""
    from converters.fastap.verify import comparison_table, verify
    from converters.mcn.compare import TOLERANCES
    from reproduce.outputs import command_dir, write_csv

    comparisons, ok = verify(args.file, args.input, args.batch, args.dtype, args.seed)
    table = comparison_table(comparisons, args.dtype)
    folder = command_dir(args.out, "verify", args)
    write_csv(folder / "comparison.csv", table)
    tol = TOLERANCES[args.dtype]
    print(format_table(list(table.columns), table.itertuples(index=False)))
    worst = table.sort_values("rel_l2", ascending=False).iloc[0] if len(table) else None
    print(f"{len(table)} vars compared ({args.dtype}; tolerance cosine >= {tol.min_cosine}, "
          f"rel L2 <= {tol.max_rel_l2})"
          + (f"; worst rel L2 {worst['rel_l2']:.3g} at {worst['var']}" if worst is not None
             else ""))
    print("OK: within tolerance" if ok else "FAILED: beyond tolerance (see the rows marked False)")
    return 0 if ok else 1
