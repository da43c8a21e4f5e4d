"""``fastap train``: train a FastAP embedding as the authors' ``train_hard.m`` (docs/train.md).

The experiment folder is ``<out>/train/<dataset>-FastAP-<dim>-<arch>/<prefix>-<nbins>bins-
batch<M>-<solver><lr>mult<lrmult>-WD<wd>``, holding ``options.json``, ``diary_NNN.txt``,
``checkpoint-epoch-N.pt``, ``net-epoch-N.mat`` and ``eval-epoch-N.json``. Exit 0 when every
epoch is done, 130 after Ctrl-C (the last checkpoint intact), 2 on bad input.
"""

from __future__ import annotations

import argparse
from typing import Any

from reproduce.cli.common import add_out_argument
from reproduce.evaluation.datasets import LOADERS

SOURCES = (("base", "--base"), ("init", "--init"), ("torchvision_weights",
                                                      "--torchvision-weights"))


def add_parser(subparsers: Any) -> None:
    """Register ``train``."""
    p = subparsers.add_parser(
        "train", help="train a FastAP embedding as the authors' train_hard.m (resumable)")
    p.add_argument("--dataset", required=True, choices=sorted(LOADERS))
    p.add_argument("--root", default=None, help="the dataset's folder")
    p.add_argument("--list", dest="list_file", default=None, metavar="FILE",
                   help="image list of --dataset list")
    p.add_argument("--base", metavar="BASE.mat", help="MatConvNet ImageNet base network "
                   "(the authors' start, e.g. resnet18-pt-mcn.mat)")
    p.add_argument("--init", metavar="MODEL.pt", help="a converted FastAP model to go on from")
    p.add_argument("--torchvision-weights", metavar="FILE",
                   help="a torchvision ResNet state_dict (torch.save) to start from")
    p.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (512)")
    p.add_argument("--batch-size", type=int, default=256, help="M, even (256)")
    p.add_argument("--nbins", type=int, default=10, help="FastAP histogram bins (10)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (1e-5)")
    p.add_argument("--lrmult", type=float, default=10.0, help="fc learning-rate factor (10)")
    p.add_argument("--wdecay", type=float, default=0.0, help="coupled L2 weight decay (0)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (30)")
    p.add_argument("--test-interval", type=int, default=3,
                   help="checkpoint and evaluate every N epochs (3)")
    p.add_argument("--max-gpu-imgs", type=int, default=None,
                   help="images per pass; above it the staged step (256 resnet18, 90 resnet50)")
    p.add_argument("--batches-per-meta-pair", type=int, default=None,
                   help="batches per meta-class pair (5 products, 2 inshop)")
    p.add_argument("--step", default="matlab", choices=("matlab", "accumulate"),
                   help="matlab: train/train_staged as the authors; accumulate: ours")
    p.add_argument("--sampler", default="authors", choices=("authors", "class-balanced"),
                   help="authors: train_hard meta-class pairs; class-balanced: ours")
    p.add_argument("--image-size", type=int, default=224,
                   help="input side (224 as the authors; smaller only for quick runs)")
    p.add_argument("--prefix", default="fastap", help="first part of the run's folder name")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=2, help="image-loading processes (2)")
    p.add_argument("--progress-seconds", type=float, default=30.0,
                   help="seconds between the diary's progress lines (30, as train_hard)")
    p.add_argument("--uncompressed-export", action="store_true",
                   help="write net-epoch-N.mat without zlib (MATLAB compresses; faster)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume from the newest checkpoint of the experiment folder")
    add_out_argument(parser=p, writes="<out>/train/<expID>/<identifier>/")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace) -> tuple[str, str]:
    """Which of --base/--init/--torchvision-weights was given (exactly one)."""
    from reproduce.errors import InputError

    given = [(key, getattr(args, key)) for key, _ in SOURCES if getattr(args, key)]
    if not given:
        raise InputError("no base network or weights given: pass --base BASE.mat, --init "
                         "MODEL.pt or --torchvision-weights FILE (nothing is downloaded)")
    if len(given) > 1:
        raise InputError("give only one of --base, --init and --torchvision-weights")
    return given[0]


def run(args: argparse.Namespace) -> int:
    """Build the run from the options and train; 130 when interrupted."""
    from reproduce.evaluation.datasets import load_dataset
    from reproduce.evaluation.distributed import init_from_env, launched_by_torchrun
    from reproduce.evaluation.evaluate import resolve_device
    from reproduce.training.experiment import TrainOptions, experiment_dir, prepare_experiment
    from reproduce.training.model import build_training_model
    from reproduce.training.run import TrainSetup, run_training

    source, path = _source(args)
    # under torchrun: join the process group first, so "cuda" is this rank's own GPU
    ctx = init_from_env() if launched_by_torchrun() else None
    device = str(ctx.device) if ctx is not None and args.device != "cpu" else \
        resolve_device(args.device)
    opts = TrainOptions(
        dataset=args.dataset, arch=args.arch, dim=args.dim, nbins=args.nbins,
        batchSize=args.batch_size, lr=args.lr, lrmult=args.lrmult, wdecay=args.wdecay,
        epoch=args.epochs, testInterval=args.test_interval, maxGpuImgs=args.max_gpu_imgs,
        batchesPerMetaPair=args.batches_per_meta_pair, step=args.step, sampler=args.sampler,
        image_size=args.image_size, prefix=args.prefix, init=f"{source}:{path}",
        device=device, workers=args.workers, progress_seconds=args.progress_seconds)
    extra = {"list_file": args.list_file} if args.dataset == "list" else {}
    ds = load_dataset(args.dataset, args.root, **extra)
    folder = experiment_dir(args.out, opts)
    prepare_experiment(folder, opts, resume=args.resume)
    model, average = build_training_model(source, path, opts.arch, opts.dim, opts.image_size)
    result = run_training(TrainSetup(opts, folder, ds, model, average, resume=args.resume,
                                     progress=not getattr(args, "quiet", False),
                                     compress_export=not args.uncompressed_export))
    if ctx is not None and ctx.rank != 0:
        return 130 if result.interrupted else 0  # rank 0 reports for the run
    print(f"{folder}: epochs {result.start_epoch + 1}-{result.end_epoch} trained; diary "
          f"{result.diary.name}; checkpoints {result.checkpoints or 'none'}")
    for epoch, recall in sorted(result.recall.items()):
        print(f"  epoch {epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))
    if result.interrupted:
        print("interrupted: the last checkpoint is intact; resume with --continue")
        return 130
    return 0
