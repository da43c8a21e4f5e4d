"""``fastap convert CKPT -o OUT.pt [--check-input DIR] [--force]``: a checkpoint as PyTorch.

Writes ``OUT.pt``, ``OUT.safetensors`` and the card ``OUT.json``; refuses to overwrite an
input, or an existing output without ``--force``.

The work is :func:`converters.fastap.convert.convert_file`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports its heavy modules only when a command runs
    from converters.fastap.card import ModelCard

from reproduce.cli.common import (
    add_force_argument,
    add_out_argument,
    check_out_folder,
    check_outputs,
)


def add_parser(subparsers: Any) -> None:
    """Register ``convert``."""
    parser = subparsers.add_parser(
        "convert", help="convert a MatConvNet .mat (FastAP checkpoint or any supported "
                        "network) to a PyTorch model file with a model card")
    parser.add_argument("ckpt", help="a MatConvNet .mat file, e.g. net-epoch-30.mat")
    parser.add_argument("-o", "--output", required=True,
                        help="the model file to write (.pt or .safetensors); the other format "
                             "and the card (.json) are written beside it")
    parser.add_argument("--check-input", metavar="IMG_DIR",
                        help="folder of images: estimate the training input scaling from the "
                             "first BatchNorm layer's moments and record it in the card")
    parser.add_argument("--max-images", type=int, default=64,
                        help="images read from IMG_DIR at most (default 64)")
    add_out_argument(parser, "<out>/convert/card.json and run_info.json")
    add_force_argument(parser)
    parser.set_defaults(func=run)


def _add_published_metrics(card: ModelCard) -> None:
    """The paper's numbers for the configuration the card's options name, as its metrics."""
    from reproduce.report.paper_tables import published_metrics

    card.metrics = published_metrics(card.opts or {}) if card.opts else None


def run(args: argparse.Namespace) -> int:
    """Convert, write the model files and ``<out>/convert/card.json``, print a summary."""
    from converters.fastap.convert import convert_file, model_files
    from reproduce.outputs import command_dir, write_json

    files = model_files(args.output)
    inputs = [args.ckpt] + ([args.check_input] if args.check_input else [])
    check_outputs(files, inputs, force=args.force)
    check_out_folder(args.out)
    card = convert_file(args.ckpt, args.output, args.check_input, max_images=args.max_images,
                        annotate=_add_published_metrics)
    folder = command_dir(args.out, "convert", args)
    write_json(folder / "card.json", card.summary())
    print(f"wrote {files[0]}, {files[1].name} and {files[2].name}: {card.family}"
          + (f" ({card.arch}, D={card.embedding_dim}, epoch {card.epoch})" if card.arch else ""))
    print(f"  source {card.source_name} sha256 {card.source_sha256}")
    scaling = card.input_scaling
    if scaling:
        scores = ", ".join(f"{name} {c['score']:.3f} (sigma ratio {c['median_sigma_ratio']:.3g})"
                           for name, c in scaling["candidates"].items())
        print(f"  input scaling from {scaling['bn_layer']} moments on {scaling['num_images']} "
              f"images: best {scaling['best']} (margin {scaling['margin']:.3f}); {scores}")
    print(f"  card: {folder / 'card.json'}")
    return 0
