"""The ``fastap train`` loop against a plain PyTorch loop, and the loader against the step.

Data: the small local run's generated SOP-layout dataset (``reproduce.training.small_run``,
3 meta-classes x 4 training classes x ``--per-class`` images), preprocessed at ``--size``
pixels. Model: torchvision ResNet-18 (random weights, global average pool) + ``fc`` 512 -> 32
+ L2 normalisation. One epoch = the authors' sampler's batches of ``--batch`` images
(3 meta-class pairs x ``--bpmp`` batches). Timings are medians of ``--repeat`` epochs after
one warm-up epoch.

1. ``loop``: images/s of our loop's training epoch (:meth:`reproduce.training.run._Loop
   .train_epoch`: loader, flips, :class:`TrainStep` with MatConvNet BatchNorm and McnAdam,
   the objective bookkeeping, progress lines and bar; no checkpoint, no evaluation) with
   ``--step matlab`` in plain mode (M <= maxGpuImgs) and in staged mode (maxGpuImgs = M/2),
   against a plain PyTorch loop on the same model (``nn.BatchNorm2d`` in train mode,
   ``torch.optim.Adam``, ``FastAPLoss``), the same batches, images and flips. Both load in
   the main process (``workers = 0``; images cached after the warm-up epoch, so this is the
   loop and the step, not the decoding) and are timed in process CPU time with
   ``--threads`` (default 1) torch threads, which other processes on a shared machine do
   not change. Targets: plain <= 1.05x, staged <= 1.4x the plain loop's time.
2. ``loader``: images/s of the ``DataLoader`` alone over one epoch (``--workers`` processes,
   default 2 as ``fastap train``; the in-memory cache is off, every image decoded and
   resized), in wall time, against the step alone on images already in memory (CPU time).
   The loader is not the bottleneck when its rate is above the step's.

    python benchmarks/bench_train_loop.py [--size 64] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from reproduce.evaluation.datasets import load_dataset  # noqa: E402
from reproduce.loss.fastap_loss import FastAPLoss  # noqa: E402
from reproduce.training import data as data_module  # noqa: E402
from reproduce.training import small_run  # noqa: E402
from reproduce.training.data import ImageSet, collate_batch  # noqa: E402
from reproduce.training.diary import Diary  # noqa: E402
from reproduce.training.experiment import TrainOptions  # noqa: E402
from reproduce.training.model import build_training_model  # noqa: E402
from reproduce.training.run import TrainResult, TrainSetup, _Loop  # noqa: E402
from reproduce.training.step import apply_flips, draw_flips  # noqa: E402


def median_time(work, repeat: int, clock=time.process_time) -> float:
    """Median ``clock`` time of ``work()`` over ``repeat`` calls after one warm-up call."""
    work()
    times = []
    for _ in range(repeat):
        t0 = clock()
        work()
        times.append(clock() - t0)
    return statistics.median(times)


def our_epoch(setup: TrainSetup, folder: Path):
    """One training epoch of our loop (epoch number fixed, so every repeat sees the same)."""
    loop = _Loop(setup)
    result = TrainResult(folder, folder / "d.txt", 0, 0)

    def work() -> None:
        with Diary(folder / "bench_diary.txt") as diary:
            loop.train_epoch(1, diary, result)
            loop.sampler.position = 0
    return work, loop


def plain_epoch(weights: Path, opts: TrainOptions, images: ImageSet, batches: list,
                labels: torch.Tensor, workers: int):
    """The same epoch as a plain PyTorch loop: torchvision BN, torch Adam, FastAPLoss."""
    trunk = torchvision.models.resnet18(weights=None)
    trunk.load_state_dict(torch.load(weights, weights_only=True))
    trunk.fc = nn.Identity()
    trunk.avgpool = nn.AdaptiveAvgPool2d(1)
    fc = nn.Linear(512, opts.dim)
    model = nn.Sequential(trunk, fc)
    optimizer = torch.optim.Adam([{"params": trunk.parameters()},
                                  {"params": fc.parameters(), "lr": opts.lr * opts.lrmult}],
                                 lr=opts.lr)
    loss_fn = FastAPLoss(opts.nbins)

    def work() -> None:
        model.train()
        flips = torch.Generator().manual_seed(1)
        loader = DataLoader(images, batch_sampler=batches, num_workers=workers,
                            collate_fn=collate_batch)
        for x, idx in zip(loader, batches, strict=True):
            x = apply_flips(x, draw_flips(x.shape[0], flips))
            optimizer.zero_grad(set_to_none=True)
            feats = nn.functional.normalize(model(x), dim=1)
            loss = loss_fn(feats, labels[idx])
            loss.backward()
            optimizer.step()
    return work


def loader_and_step(loop: _Loop, ds, images: ImageSet, batches: list, average: np.ndarray,
                    args: argparse.Namespace) -> tuple[float, float]:
    """Median epoch times of the loader alone (no cache) and of the step alone."""
    cache_bytes = data_module.CACHE_BYTES
    data_module.CACHE_BYTES = 0  # the loader alone, without the in-memory cache
    try:
        fresh = ImageSet(ds.paths, args.size, ds.pre_resize, average)
    finally:  # the loops measured after this one keep the cache, as the plain ones had it
        data_module.CACHE_BYTES = cache_bytes

    def load_only() -> None:
        for _ in DataLoader(fresh, batch_sampler=batches, num_workers=args.workers,
                            collate_fn=collate_batch):
            pass
    preloaded = [collate_batch([images[i] for i in b]) for b in batches]

    def step_only() -> None:
        for x, idx in zip(preloaded, batches, strict=True):
            loop.step(x, loop.labels[idx])
    return (median_time(load_only, args.repeat, time.perf_counter),
            median_time(step_only, args.repeat))


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bpmp", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    small_run.PER_CLASS = args.per_class
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_loop_"))
    root = small_run.write_small_products(tmp / "data")
    torch.manual_seed(0)
    weights = tmp / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    ds = load_dataset("products", root)
    M = args.batch
    print(f"data: {len(ds)} images ({int((ds.subset == 'train').sum())} training), "
          f"{args.size} px, M = {M}, {args.threads} torch threads, workers {args.workers}")
    results = {}
    for name, max_gpu in (("plain", M), ("staged", M // 2)):
        opts = TrainOptions(dataset="products", dim=32, batchSize=M, epoch=1,
                            batchesPerMetaPair=args.bpmp, image_size=args.size,
                            maxGpuImgs=max_gpu, device="cpu", workers=0,
                            progress_seconds=30.0, lr=1e-4)
        model, average = build_training_model("torchvision_weights", weights, "resnet18",
                                              opts.dim, opts.image_size)
        setup = TrainSetup(opts, tmp, ds, model, average, progress=False)
        work, loop = our_epoch(setup, tmp)
        batches = loop.sampler.batches_for(1).tolist()
        results[name] = median_time(work, args.repeat)
        if name == "plain":
            images = ImageSet(ds.paths, args.size, ds.pre_resize, average)
            labels = torch.as_tensor(np.asarray(ds.labels, np.int64))
            results["torch"] = median_time(plain_epoch(weights, opts, images, batches,
                                                       labels, 0), args.repeat)
            results["loader"], results["step"] = loader_and_step(
                loop, ds, images, batches, average, args)
    n = len(batches) * M
    rate = {k: n / v for k, v in results.items()}
    print(f"epoch of {len(batches)} batches ({n} images), median of {args.repeat}:")
    print(f"  plain PyTorch loop      {results['torch']:7.2f} s  {rate['torch']:7.1f} img/s")
    print(f"  ours, plain step        {results['plain']:7.2f} s  {rate['plain']:7.1f} img/s"
          f"  ratio {results['plain'] / results['torch']:.3f} (target <= 1.05)")
    print(f"  ours, staged (chunk {M // 2:d})  {results['staged']:7.2f} s  "
          f"{rate['staged']:7.1f} img/s  ratio {results['staged'] / results['torch']:.3f} "
          "(target <= 1.4)")
    print(f"  loader alone ({args.workers} workers, no cache) {rate['loader']:7.1f} img/s vs "
          f"step alone {rate['step']:7.1f} img/s: loader/step rate "
          f"{rate['loader'] / rate['step']:.2f} (> 1: the loader is not the bottleneck)")


if __name__ == "__main__":
    main()
