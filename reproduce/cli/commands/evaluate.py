"""``fastap evaluate --model OUT.pt --dataset products|inshop|vid|cub|cars --root DIR``, or
``--dataset list --list FILE [--root DIR]`` for any dataset described by an image list."""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument
from reproduce.evaluation.datasets import LOADERS

# reproduce.evaluation.preprocess.NAMES / INTERPOLATIONS / GREYSCALE_MEANS, without
# importing torch
PREPROCESSING_NAMES = ("matlab", "torchvision")
INTERPOLATIONS = ("bicubic", "bilinear")
GREYSCALE_MEANS = ("first", "per-channel")
# reproduce.evaluation.evaluate.DEVICES, without importing torch
DEVICES = ("auto", "cpu", "cuda")


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate", help="Recall@K (as evaluate_model.m computes it), MAP@R, R-precision "
                         "and NMI of a converted model on SOP, In-Shop, VehicleID, CUB, "
                         "Cars196 or any image list")
    p.add_argument("--model", required=True, help="converted model file (.pt)")
    p.add_argument("--dataset", required=True, choices=sorted(LOADERS))
    p.add_argument("--root", default=None,
                   help="dataset folder (required, except for --dataset list, where it "
                        "defaults to the list file's folder)")
    p.add_argument("--list", dest="list_file", default=None, metavar="FILE",
                   help="image list for --dataset list: a header line naming the columns "
                        "path, class and optionally superclass and split (train/test/query/"
                        "gallery); .csv files are comma-separated, others whitespace")
    p.add_argument("--protocol", default="authors",
                   help="authors (evaluate_model.m, default), reid (VehicleID re-ID: one "
                        "random gallery image per vehicle, 10 draws), all, or names such as "
                        "vid-small-authors (comma-separated)")
    add_out_argument(p, "<out>/evaluate/<model>/ (metrics, tables, embeddings cache)")
    p.add_argument("--preprocessing", default=None, choices=PREPROCESSING_NAMES,
                   help="input preprocessing (default: the one the model card records: its "
                        "convert --check-input result, else its default, else matlab)")
    p.add_argument("--resize", default="vl_imreadjpeg", choices=("vl_imreadjpeg", "imresize"),
                   help="how the matlab preprocessing resizes to 224x224")
    p.add_argument("--interpolation", default="bicubic", choices=INTERPOLATIONS,
                   help="kernel of the matlab preprocessing's 224x224 resize: bicubic (what "
                        "the authors' batch function passed, default) or bilinear "
                        "(vl_imreadjpeg's own default)")
    p.add_argument("--greyscale-mean", default="first", choices=GREYSCALE_MEANS,
                   help="grey images under the matlab preprocessing: subtract the first mean "
                        "value from all three channels as vl_imreadjpeg does (first, "
                        "default) or each channel's own value (per-channel)")
    p.add_argument("--no-jpeg-reencode", action="store_true",
                   help="skip the JPEG re-encode (quality 75) after the 256x256 pre-resize")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where embeddings are extracted and distances searched (default "
                        "auto: CUDA when available, else the CPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--cache-dir", default=None,
                   help="embedding cache (default: <out>/cache/embeddings)")
    p.add_argument("--strict", action="store_true",
                   help="fail when dataset counts differ from the published ones")
    p.add_argument("--verify", default="exists", choices=("none", "exists", "decode"),
                   help="check the images before extracting (decode: open every image)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the MATLAB-format Recall@K lines and the other metrics per protocol."""
    from reproduce.evaluation.evaluate import evaluate
    from reproduce.evaluation.preprocess import MATLAB_JPEG_QUALITY

    summary = evaluate(args.model, args.dataset, args.root, protocol=args.protocol,
                       out=args.out, preprocessing=args.preprocessing,
                       batch_size=args.batch_size, workers=args.workers,
                       cache_dir=args.cache_dir, strict=args.strict, verify=args.verify,
                       jpeg_quality=None if args.no_jpeg_reencode else MATLAB_JPEG_QUALITY,
                       resize=args.resize, interpolation=args.interpolation,
                       greyscale_mean=args.greyscale_mean, list_file=args.list_file,
                       device=args.device)
    if summary["folder"] is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    for name, res in summary["protocols"].items():
        print(f"[{summary['dataset']['name']}] {name}: {res['description']}")
        print(res["printed"])
        print(_other_metrics(res))
    print(f"results: {summary['folder']}")
    return 0


def _other_metrics(res: dict[str, Any]) -> str:
    """``MAP@R: 0.412, R-precision: 0.447, NMI: 0.901`` (``n/a`` when not computed)."""
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (f"MAP@R: {fmt(res.get('map_at_r'))}, R-precision: {fmt(res.get('r_precision'))}, "
            f"NMI: {fmt(res.get('nmi'))}")
