"""The run loop behind ``fastap train``: epochs of the authors' sampler, flips, the step,
objective bookkeeping, checkpoints, evaluation and the diary, resumable at any checkpoint.

:func:`run_training` follows ``train_hard.m``'s ``cnn_train``-like loop: for each epoch from
the newest checkpoint on, the sampler's batches (``set_epoch``), each batch's images read with
the MATLAB preprocessing (:mod:`reproduce.training.data`) by a ``DataLoader`` whose
``batch_sampler`` is the epoch's batch list, one 50 % flip per image drawn from a generator
seeded ``randseed * 100003 + epoch`` (so an epoch's flips do not depend on what ran before:
a resumed run redraws the same ones), then the step. The step object comes from a factory,
``step_factory(model, optimizer, opts)`` (default :func:`make_step`), so a distributed
wrapper with the same ``__call__(images, labels) -> StepResult`` can replace it.

At multiples of ``testInterval``: the checkpoint (:mod:`reproduce.training.checkpoint`) and
its MatConvNet export ``net-epoch-N.mat`` (:mod:`reproduce.training.export`). At epoch 1 and
multiples of ``testInterval``: the evaluation on the dataset's authors protocol(s), written
to ``eval-epoch-N.json`` and into the diary. Ctrl-C stops the loop cleanly (the diary gets
MATLAB's ``Operation terminated by user`` line, the last checkpoint stays as it was).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import Dataset, Protocol
from reproduce.evaluation.metrics import retrieval_metrics
from reproduce.outputs import write_json
from reproduce.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    newest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reproduce.training.data import ImageSet, collate_batch
from reproduce.training.diary import Diary, nan_free_mean, next_diary
from reproduce.training.experiment import TrainOptions
from reproduce.training.export import export_checkpoint
from reproduce.training.optimizer import McnAdam
from reproduce.training.sampler import ClassBalancedSampler, MetaClassSampler
from reproduce.training.step import StepResult, TrainStep, apply_flips, draw_flips

log = logging.getLogger(__name__)

Step = Callable[[Tensor, Tensor], StepResult]
StepFactory = Callable[[nn.Module, McnAdam, TrainOptions], Step]
FLIP_SEED_STRIDE = 100003
EVAL_BATCH = 64
#: The progress line's mode for each step mode (the parser knows ``train``/``train_staged``).
PROGRESS_MODE = {"plain": "train", "staged": "train_staged", "accumulate": "train_staged"}


def make_step(model: nn.Module, optimizer: McnAdam, opts: TrainOptions) -> Step:
    """The step: ``--step matlab`` is the authors' ``auto`` rule, ``accumulate`` ours.

    Under ``torchrun`` (a process group of more than one rank) it is the
    :class:`~reproduce.training.distributed.DistributedTrainStep`, whose BatchNorm layers
    share their statistics over the ranks; every rank starts from rank 0's weights.
    """
    mode = "auto" if opts.step == "matlab" else "accumulate"
    if distributed_world() > 1:
        from reproduce.training.distributed import DistributedTrainStep, sync_batchnorms

        sync_batchnorms(model)
        return DistributedTrainStep(model, optimizer, num_bins=opts.nbins,
                                    max_gpu_imgs=opts.maxGpuImgs, mode=mode)
    return TrainStep(model, optimizer, num_bins=opts.nbins, max_gpu_imgs=opts.maxGpuImgs,
                     mode=mode)


def distributed_world() -> int:
    """How many ranks this process trains with (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return distributed_world() == 1 or dist.get_rank() == 0


def make_optimizer(model: nn.Module, opts: TrainOptions) -> McnAdam:
    """McnAdam with ``fc`` at ``lrmult`` (``get_model.m``) and everything else at 1."""
    fc = {id(p) for p in model.fc.parameters()}  # type: ignore[union-attr]
    groups = [{"params": [p for p in model.parameters() if id(p) not in fc], "lr_mult": 1.0},
              {"params": list(model.fc.parameters()), "lr_mult": float(opts.lrmult)}]  # type: ignore
    return McnAdam(groups, lr=opts.lr, weight_decay=opts.wdecay)


def make_sampler(ds: Dataset, opts: TrainOptions) -> tuple[Any, str, str]:
    """The batch sampler, its batches line for the diary and the MATLAB function it mirrors."""
    train = ds.subset == "train"
    if not train.any():
        raise InputError(f"dataset {ds.name} at {ds.root}: no training images")
    if opts.sampler == "class-balanced":
        sampler = ClassBalancedSampler(ds.labels, train, opts.batchSize,
                                       random_seed=opts.randseed)
        classes = len(np.unique(ds.labels[train]))
        return sampler, f"{classes} classes, {len(sampler)} batches", "train_hard"
    metas = np.unique(ds.meta[train])
    vid = ds.name == "vid"
    if len(metas) < 2:
        raise InputError(f"dataset {ds.name} at {ds.root}: the authors' sampler needs "
                         f"meta-classes (at least two among the training images, found "
                         f"{len(metas)}); use --sampler class-balanced")
    labels = np.stack([ds.labels, ds.meta], axis=1)
    sampler = MetaClassSampler(labels, train, opts.batchSize, opts.batchesPerMetaPair,
                               sampler="train_hard_vid" if vid else "train_hard",
                               random_seed=opts.randseed)
    if vid:
        return sampler, f"{len(metas) - 1} meta-classes, {len(sampler)} batches", \
            "train_hard_vid"
    return (sampler, f"{len(metas)} meta-classes, {opts.batchesPerMetaPair} batches per "
            "meta-class pair", "train_hard")


def authors_protocols(ds: Dataset) -> list[Protocol]:
    """The protocols ``evaluate_model.m`` scores (family ``authors``)."""
    return [ds.protocols[n] for n in ds.protocol_names("authors")]


def _subset_name(protocol: Protocol) -> str | None:
    """``Small``/``Medium``/``Large`` for VehicleID's protocols, else ``None``."""
    parts = protocol.name.split("-")
    return parts[1].capitalize() if parts[0] == "vid" and len(parts) == 3 else None


@torch.no_grad()
def embed(model: nn.Module, images: ImageSet, indices: np.ndarray, device: str,
          workers: int) -> np.ndarray:
    """Test-mode embeddings of the dataset images ``indices`` (``N x D`` float32)."""
    model.eval()
    loader = DataLoader(torch.utils.data.Subset(images, indices.tolist()),
                        batch_size=EVAL_BATCH, num_workers=workers, collate_fn=collate_batch)
    out = [model(x.to(device)).reshape(x.shape[0], -1).cpu().numpy() for x in loader]
    return np.concatenate(out).astype(np.float32, copy=False)


def evaluate_epoch(model: nn.Module, ds: Dataset, images: ImageSet, device: str,
                   workers: int) -> tuple[list[dict[str, Any]], int, float]:
    """Recall@K, MAP@R and R-precision on every authors protocol; (results, images, s)."""
    protocols = authors_protocols(ds)
    t0 = time.time()
    needed = np.unique(np.concatenate([p.image_indices() for p in protocols]))
    feats = embed(model, images, needed, device, workers)
    position = np.full(len(ds), -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))
    seconds = time.time() - t0
    results = []
    for protocol in protocols:
        smallest = min(len(s.database) for s in protocol.splits)
        Ks = [k for k in protocol.Ks if k <= smallest]
        recalls, maps, rprecs = [], [], []
        for split in protocol.splits:
            res = retrieval_metrics(feats[position[split.query]], ds.labels[split.query],
                                    feats[position[split.database]], ds.labels[split.database],
                                    Ks, remove_diag=protocol.remove_diag, progress=False)
            recalls.append(res.recall.recall)
            maps.append(res.rank.map_at_r)
            rprecs.append(res.rank.mean_r_precision)
        results.append({"protocol": protocol.name, "subset": _subset_name(protocol),
                        "Ks": Ks, "Ks_dropped": [k for k in protocol.Ks if k > smallest],
                        "recall": np.mean(np.stack(recalls), axis=0).tolist(),
                        "map_at_r": float(np.nanmean(maps)),
                        "r_precision": float(np.nanmean(rprecs))})
    return results, len(needed), seconds


@dataclass
class TrainResult:
    """What a call of :func:`run_training` did."""

    folder: Path
    diary: Path
    start_epoch: int
    end_epoch: int
    interrupted: bool = False
    objectives: dict[int, float] = field(default_factory=dict)  # as printed
    recall: dict[int, dict[str, float]] = field(default_factory=dict)  # as printed
    checkpoints: list[int] = field(default_factory=list)


@dataclass
class TrainSetup:
    """Everything :func:`run_training` needs, built by the command (or a test)."""

    opts: TrainOptions
    folder: Path
    dataset: Dataset
    model: nn.Module
    average_image: np.ndarray
    resume: bool = True
    progress: bool = True
    step_factory: StepFactory = make_step
    #: zlib-compress ``net-epoch-N.mat`` as MATLAB's ``save`` does (off saves time in tests)
    compress_export: bool = True


def _mcn_opt(opts: TrainOptions, folder: Path, ds: Dataset, resume: bool) -> dict[str, Any]:
    """``opts`` as ``run_demo`` displays it (authors' names first, then ours)."""
    Ks = list(authors_protocols(ds)[0].Ks) if authors_protocols(ds) else []
    return {"ablation": 0, "arch": opts.arch, "batchSize": opts.batchSize, "continue": resume,
            "debug": False, "dim": opts.dim, "epoch": opts.epoch, "gpus": 0, "lr": opts.lr,
            "lrdecay": 0.1, "lrmult": opts.lrmult, "lrstep": 10, "nbins": opts.nbins,
            "obj": "FastAP", "plot": False, "prefix": opts.prefix, "randseed": opts.randseed,
            "solver": opts.solver, "testInterval": opts.testInterval, "wdecay": opts.wdecay,
            "Ks": Ks, "dataset": opts.dataset, "expID": opts.expID,
            "maxGpuImgs": opts.maxGpuImgs, "identifier": opts.identifier,
            "expDir": str(folder), "batchesPerMetaPair": opts.batchesPerMetaPair,
            "step": opts.step, "sampler": opts.sampler, "imageSize": opts.image_size,
            "init": opts.init, "device": opts.device}


def _gpu_number(device: str) -> int:
    """``GPU #g``: the CUDA index + 1, 0 on the CPU."""
    if not device.startswith("cuda"):
        return 0
    return (int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()) + 1


class _Loop:
    """One invocation's state (kept together so that the epoch code stays short)."""

    def __init__(self, setup: TrainSetup) -> None:
        self.s = setup
        self.opts = setup.opts
        self.ds = setup.dataset
        self.device = self.opts.device
        self.model = setup.model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.opts)
        self.sampler, self.batches_line, self.train_hard = make_sampler(self.ds, self.opts)
        self.step = setup.step_factory(self.model, self.optimizer, self.opts)
        self.images = ImageSet(self.ds.paths, self.opts.image_size, self.ds.pre_resize,
                               setup.average_image)
        self.labels = torch.as_tensor(np.asarray(self.ds.labels, dtype=np.int64))
        self.history: list[dict[str, Any]] = []
        self.mcn_opt = _mcn_opt(self.opts, setup.folder, self.ds, setup.resume)

    def restore(self, path: Path) -> int:
        """Load a checkpoint; returns its epoch."""
        data = load_checkpoint(path)
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: the checkpoint does not fit this model ({exc})"
                             ) from exc
        self.sampler.load_state_dict(data["sampler"])
        if "rng" in data:
            set_rng_state(data["rng"])
        self.history = list(data["history"])
        return int(data["epoch"])

    def checkpoint(self, epoch: int, diary: Diary) -> None:
        """``checkpoint-epoch-N.pt``, then ``net-epoch-N.mat``, then the ``saved:`` line."""
        folder = self.s.folder
        save_checkpoint(checkpoint_path(folder, epoch), {
            "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
            "rng": rng_state(), "options": self.opts.to_dict(), "history": self.history,
            "average_image": self.s.average_image})
        mat = folder / f"net-epoch-{epoch}.mat"
        try:
            export_checkpoint(mat, self.model, epoch=epoch, opt=self.mcn_opt,
                              average_image=self.s.average_image,
                              objectives=[(h["time"], h["objective"]) for h in self.history],
                              compress=self.s.compress_export)
        except OSError as exc:
            raise InputError(f"{mat}: cannot write the MatConvNet export ({exc})") from exc
        diary.saved(mat)

    def train_epoch(self, epoch: int, diary: Diary, result: TrainResult) -> None:
        """One epoch of batches; appends to the history and the diary."""
        opts = self.opts
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches_for(epoch).tolist()
        nb, M = len(batches), opts.batchSize
        diary.epoch_start(epoch, opts.epoch, opts.solver, opts.lr, self.batches_line)
        flips = torch.Generator().manual_seed(opts.randseed * FLIP_SEED_STRIDE + epoch)
        local = getattr(self.step, "local_positions", None)
        positions = local(M).tolist() if local is not None and distributed_world() > 1 else None
        # under torchrun each rank reads only its part of every batch (flips are drawn for
        # the whole batch, then the rank's part taken: the same flips as one process)
        loaded = batches if positions is None else [[b[i] for i in positions] for b in batches]
        loader = DataLoader(self.images, batch_sampler=loaded, num_workers=opts.workers,
                            collate_fn=collate_batch)
        objs: list[float] = []
        start = last_print = time.time()
        res = None
        with tqdm(total=nb * M, desc=f"epoch {epoch}/{opts.epoch}", unit="img",
                  disable=not self.s.progress, leave=False) as bar:
            for b, (x, idx) in enumerate(zip(loader, batches, strict=True), start=1):
                batch_flips = draw_flips(len(idx), flips)
                x = apply_flips(x, batch_flips if positions is None else batch_flips[positions])
                res = self.step(x, self.labels[idx])
                objs.append(res.objective)
                self.sampler.position = b  # batches trained (see _EpochBatchSampler)
                now = time.time()
                mean = nan_free_mean(objs)
                bar.update(x.shape[0])
                bar.set_postfix(obj=f"{mean:.3f}")
                if now - last_print > opts.progress_seconds:
                    diary.progress(opts.dataset, PROGRESS_MODE[res.mode], epoch, b, nb, M,
                                   b * M / max(now - start, 1e-9), res.objective, mean)
                    last_print = now
        printed = diary.epoch_end(epoch, nan_free_mean(objs))
        result.objectives[epoch] = printed
        self.history.append({"epoch": epoch, "time": time.time() - start,
                             "objective": objs[-1], "average": nan_free_mean(objs)})

    def evaluate(self, epoch: int, diary: Diary, result: TrainResult) -> None:
        """Evaluation after ``epoch``: ``eval-epoch-N.json`` and the diary's block."""
        opts = self.opts
        results, count, seconds = evaluate_epoch(self.model, self.ds, self.images,
                                                 self.device, opts.workers)
        printed: dict[str, float] = {}
        for r in results:
            subset = r["subset"]
            values = diary.evaluation(opts.dataset, opts.arch, count, seconds, r["Ks"],
                                      r["recall"], subset)
            for k, v in values.items():
                printed[f"R@{k}" + (f" {subset.lower()}" if subset else "")] = v
        result.recall[epoch] = printed
        write_json(self.s.folder / f"eval-epoch-{epoch}.json",
                   {"epoch": epoch, "dataset": opts.dataset, "images": count,
                    "image_size": opts.image_size, "protocols": results,
                    "nmi": "not computed during training (fastap evaluate computes it)"})

    def run(self) -> TrainResult:
        """Resume if asked and possible, then train the remaining epochs."""
        folder, opts = self.s.folder, self.opts
        start = 0
        newest = newest_checkpoint(folder) if self.s.resume else None
        if newest is not None:
            start = self.restore(newest[1])
        diary_path = next_diary(folder) if is_main_process() else os.devnull
        result = TrainResult(folder, Path(diary_path), start, start)
        with Diary(diary_path, train_hard=self.train_hard) as diary:
            diary.options(self.mcn_opt)
            if start:
                diary.resuming(start)
            epoch, b = start + 1, 0
            try:
                for epoch in range(start + 1, opts.epoch + 1):
                    self.train_epoch(epoch, diary, result)
                    if epoch % opts.testInterval == 0:
                        if is_main_process():
                            self.checkpoint(epoch, diary)
                        barrier()  # every rank sees the checkpoint before it goes on
                        result.checkpoints.append(epoch)
                    diary.postepoch(opts.expID, opts.identifier, _gpu_number(self.device))
                    if (epoch == 1 or epoch % opts.testInterval == 0) and is_main_process():
                        self.evaluate(epoch, diary, result)
                    result.end_epoch = epoch
            except KeyboardInterrupt:
                b = self.sampler.position
                diary.lines(f"Operation terminated by user during {self.train_hard}>"
                            f"processEpoch (epoch {epoch}, batch {b})", "")
                result.interrupted = True
                return result
            diary.complete(opts.epoch)
            diary.postepoch(opts.expID, opts.identifier, _gpu_number(self.device))
        return result


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if distributed_world() > 1:
        dist.barrier()


def run_training(setup: TrainSetup) -> TrainResult:
    """Train as the module docstring says; returns the :class:`TrainResult`."""
    if not math.isfinite(setup.opts.lr):
        raise InputError(f"--lr {setup.opts.lr}: must be finite")
    return _Loop(setup).run()
