"""``fastap tables``: Tables 1-3 with published, log and converted-model values side by side."""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument


def add_parser(subparsers: Any) -> None:
    """Register ``fastap tables``."""
    parser = subparsers.add_parser(
        "tables", help="regenerate Tables 1-3 (CSV, Markdown, LaTeX) beside published values",
        description="Writes <out>/tables/table1_products.csv, table2_inshop.csv, "
                    "table3_vid.csv (+ .md, .tex). Missing inputs show as missing; evaluated "
                    "values not from the released checkpoint on the full test set are "
                    "marked [partial] and not compared with the published numbers.")
    parser.add_argument("--logs", nargs="*", default=None, metavar="DIR",
                        help="fastap logs output folders (epochs.csv + runs.csv) or diary "
                             "folders")
    parser.add_argument("--evaluations", default=None, metavar="DIR",
                        help="folder of evaluation CSVs (e.g. <out>/evaluate)")
    parser.add_argument("--published", default=None, metavar="CSV",
                        help="replace the shipped published_results.csv")
    add_out_argument(parser, "<out>/tables/table{1,2,3}_*.{csv,md,tex}")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the tables and say where they went."""
    import pandas as pd

    from reproduce.report.paper_tables import partial_notes, tables_command

    written = tables_command(args.logs, args.evaluations, args.published, args.out,
                             {k: v for k, v in vars(args).items() if not callable(v)})
    for path in written.values():
        print(f"wrote {path} (+ .md, .tex)")
        for note in partial_notes(pd.read_csv(path)):
            print(f"  PARTIAL (not the released model on the full test set): {note}")
    return 0
