"""One module per ``fastap`` subcommand; each defines ``add_parser(subparsers)``.

``add_parser`` registers the subcommand and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit status) with ``parser.set_defaults(func=...)``.
"""

SUBCOMMANDS = (
    "inspect",
    "convert",
    "verify",
    "parity",
    "evaluate",
    "train",
    "logs",
    "tables",
    "plots",
    "reproduce",
)
