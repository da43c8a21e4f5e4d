"""The training engine on CPU: staged vs plain step time, staged memory, one SOP epoch of batches.

Model: torchvision ``resnet18`` (random weights, adaptive average pooling so low resolutions
work) + ``fc`` 512 -> D + L2 normalisation, every BatchNorm swapped to MatConvNet's
(:func:`reproduce.training.batchnorm.swap_to_mcn`), trained by :class:`TrainStep` with
:class:`McnAdam` (lr 1e-5, lr multiplier 10 on ``fc``), FastAP with 10 bins, random images of
``--size`` pixels and labels of 4 images per class.

1. ``time``: one batch of ``--batch`` images, plain mode (one forward/backward, one update)
   vs staged mode with chunks of ``--chunk`` (test-mode forward of every chunk, FastAP on the
   batch, then a forward/backward and an update per chunk) on the same images, alternately,
   median of ``--repeat`` steps after one warm-up step each, in process CPU time with one
   torch thread (robust on a shared machine). Anchor: the plain step. Target <= 1.4x. The
   staged time is split into its stages (from the step's observer events).
2. ``memory``: peak resident memory (``ru_maxrss``) of a fresh process running one staged
   step of ``--mem-batch`` images in chunks of ``--mem-chunk``, vs one running a plain step
   of ``--mem-chunk`` images. Anchor: the plain step of one chunk. Target <= 1.2x. Also
   printed: both minus a process that builds the model and optimizer and takes one update
   (the part of the peak that activations make).
3. ``sampler``: building one epoch of ``train_hard`` batches at Stanford Online Products'
   size (59,551 images, 11,318 classes, 12 meta-classes, M = 256, 5 batches per pair =
   330 batches), plus the meta-class analysis once. Median of 20. Target < 1 s.

    python benchmarks/bench_training.py [--size 64] [--batch 64] [--chunk 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: step timings use this process's CPU time: with one torch thread (``--threads 1``, the
#: default) it is the work done, insensitive to other processes sharing the cores
CLOCK = time.process_time

CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_training import build, batch, peak_rss_mb
kind, size, M, chunk, threads = sys.argv[2], *map(int, sys.argv[3:7])
torch.set_num_threads(threads)
step, model, opt = build(max_gpu_imgs=chunk, mode="plain" if kind == "plain" else "staged")
images, labels = batch(M, size)
if kind == "baseline":
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(batch_size=M)
else:
    step(images, labels)
print(json.dumps({"maxrss_mb": peak_rss_mb()}))
"""


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` survives ``exec`` and
    would report the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def build(max_gpu_imgs: int, mode: str, dim: int = 128):
    """The benchmark model, its optimizer and a :class:`TrainStep` (see the module doc)."""
    import torch
    import torchvision
    from torch import nn

    from reproduce.training.batchnorm import swap_to_mcn
    from reproduce.training.optimizer import McnAdam
    from reproduce.training.step import TrainStep

    class SmallEmbedding(nn.Module):
        """resnet18 trunk, fc, L2 normalisation."""

        def __init__(self) -> None:
            super().__init__()
            self.base = torchvision.models.resnet18(weights=None)
            self.base.fc = nn.Identity()
            self.fc = nn.Linear(512, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.fc(self.base(x)), dim=1)

    torch.manual_seed(0)
    model = SmallEmbedding()
    swap_to_mcn(model)
    fc = list(model.fc.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    opt = McnAdam([{"params": others}, {"params": fc, "lr_mult": 10.0}], lr=1e-5)
    return TrainStep(model, opt, max_gpu_imgs=max_gpu_imgs, mode=mode), model, opt


def batch(M: int, size: int):
    """Random images (M x 3 x size x size) and labels, 4 images per class."""
    import torch

    g = torch.Generator().manual_seed(1)
    images = torch.randn(M, 3, size, size, generator=g) * 50
    labels = torch.arange(M) // 4
    return images, labels.to(torch.float64)


def bench_time(size: int, M: int, chunk: int, repeat: int) -> dict[str, float]:
    """Median seconds of a plain and a staged step on the same images, measured alternately
    (so that load from other processes hits both alike), and of one optimizer update."""
    import torch

    images, labels = batch(M, size)
    steps = {mode: build(max_gpu_imgs=chunk if mode == "staged" else M, mode=mode)
             for mode in ("plain", "staged")}
    times: dict[str, list[float]] = {"plain": [], "staged": [], "update": [], "stage1": [],
                                     "stage2": [], "stage3": [], "updates": []}
    marks: list[tuple[str, float]] = []
    steps["staged"][0].observer = lambda event, **_: marks.append((event, CLOCK()))
    for step, _, _ in steps.values():
        step(images, labels)  # warm-up
    for _ in range(repeat):
        for mode, (step, _, _) in steps.items():
            marks.clear()
            t0 = CLOCK()
            step(images, labels)
            times[mode].append(CLOCK() - t0)
        # staged split: stage 1 up to its last chunk, stage 2, stage 3 forward/backward
        # (chunk start to chunk_backward) and the per-chunk updates (to chunk_step)
        t_prev, split = t0, {"stage1": 0.0, "stage2": 0.0, "stage3": 0.0, "updates": 0.0}
        for event, t in marks:
            key = {"stage1": "stage1", "stage2": "stage2", "chunk_backward": "stage3",
                   "chunk_step": "updates"}[event]
            split[key] += t - t_prev
            t_prev = t
        for key, value in split.items():
            times[key].append(value)
        _, model, opt = steps["plain"]
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        t0 = CLOCK()
        opt.step(batch_size=M)
        times["update"].append(CLOCK() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_memory(size: int, M: int, chunk: int, threads: int) -> dict[str, float]:
    """Peak RSS (MB) of fresh processes: baseline, plain step of ``chunk``, staged ``M``."""
    out = {}
    for kind, m in (("baseline", chunk), ("plain", chunk), ("staged", M)):
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), kind, str(size), str(m),
                               str(chunk), str(threads)], capture_output=True, text=True,
                              check=False, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"child {kind} failed:\n{done.stderr}")
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])["maxrss_mb"]
    return out


def bench_sampler(repeat: int = 20) -> dict[str, float]:
    """Seconds to analyse SOP-size labels once and to build one epoch (median)."""
    import numpy as np

    from reproduce.training.sampler import MetaClassSampler

    rng = np.random.default_rng(0)
    n_img, n_cls = 59_551, 11_318
    sizes = np.full(n_cls, 2) + rng.multinomial(n_img - 2 * n_cls, np.ones(n_cls) / n_cls)
    cls = np.repeat(np.arange(1, n_cls + 1), sizes)
    meta = rng.integers(1, 13, n_cls)
    meta[:12] = np.arange(1, 13)
    labels = np.stack([cls, meta[cls - 1]], axis=1)
    t0 = time.perf_counter()
    sampler = MetaClassSampler(labels, np.ones(n_img), 256, 5)
    init = time.perf_counter() - t0
    times = []
    for epoch in range(1, repeat + 1):
        t0 = time.perf_counter()
        sampler.plan(epoch)
        times.append(time.perf_counter() - t0)
    assert sampler.plan(1).batches.shape == (330, 256)
    return {"analysis": init, "epoch": statistics.median(times)}


def main() -> None:
    """Run the three measurements and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mem-size", type=int, default=32)
    parser.add_argument("--mem-batch", type=int, default=256)
    parser.add_argument("--mem-chunk", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["time", "memory", "sampler"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    if "sampler" not in args.skip:
        s = bench_sampler()
        print(f"sampler: SOP-size meta-class analysis {s['analysis'] * 1e3:.1f} ms, one epoch "
              f"(330 x 256) {s['epoch'] * 1e3:.2f} ms (target < 1000 ms)")
    if "time" not in args.skip:
        t = bench_time(args.size, args.batch, args.chunk, args.repeat)
        print(f"time: M={args.batch} at {args.size}px, plain {t['plain']:.2f} s, staged "
              f"(chunks of {args.chunk}) {t['staged']:.2f} s: {t['staged'] / t['plain']:.2f}x "
              f"(target <= 1.4x); one optimizer update {t['update'] * 1e3:.0f} ms; staged split: "
              f"stage 1 {t['stage1']:.2f} s, stage 2 {t['stage2'] * 1e3:.0f} ms, stage 3 "
              f"forward/backward {t['stage3']:.2f} s, {args.batch // args.chunk} updates "
              f"{t['updates']:.2f} s")
    if "memory" not in args.skip:
        m = bench_memory(args.mem_size, args.mem_batch, args.mem_chunk, args.threads)
        print(f"memory: peak RSS at {args.mem_size}px: baseline (model + optimizer) "
              f"{m['baseline']:.0f} MB, plain M={args.mem_chunk} {m['plain']:.0f} MB, staged "
              f"M={args.mem_batch} in chunks of {args.mem_chunk} {m['staged']:.0f} MB: "
              f"{m['staged'] / m['plain']:.2f}x (target <= 1.2x); above baseline "
              f"{m['plain'] - m['baseline']:.0f} vs {m['staged'] - m['baseline']:.0f} MB")


if __name__ == "__main__":
    main()
