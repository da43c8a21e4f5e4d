"""The training step on several processes (``torchrun``; GPUs or machines) with MatConvNet's
semantics kept: the same batches, BatchNorm statistics, derivatives and updates as one process.

:class:`DistributedTrainStep` is :class:`~reproduce.training.step.TrainStep` with the work of
every batch of ``M`` split over the ``W`` ranks of a process group:

The launcher helpers (:func:`init_from_env`, :func:`rank_slice`, :func:`all_gather_rows`,
:class:`DistributedContext`) live in :mod:`reproduce.evaluation.distributed`, which
``fastap evaluate`` uses too, and are re-exported here.

* **Which images a rank processes.** Every forward unit (the whole batch in plain mode, each
  chunk of at most ``maxGpuImgs`` consecutive images in staged/accumulate mode, the same
  ``chunk_slices`` as one process) is cut into ``W`` consecutive runs by :func:`rank_slice`
  (sizes differ by at most one, the larger ones first); rank ``r`` takes run ``r`` of every
  unit. :meth:`DistributedTrainStep.local_positions` lists the batch positions a rank needs,
  so a loader can read only those; ``__call__`` accepts the full batch (and takes its part)
  or just those images. Labels are always the full ``M`` (FastAP needs them all).
* **BatchNorm.** :func:`sync_batchnorms` turns every
  :class:`~reproduce.training.batchnorm.McnBatchNorm2d` into a :class:`SyncMcnBatchNorm2d`:
  in normal mode its statistics (mean, biased variance) are summed over the ranks, so a unit
  split over ranks is normalised with the statistics of the whole unit, as MATLAB normalises
  the whole batch (plain) or the whole chunk (staged) on one GPU; its backward all-reduces
  the two per-channel sums the batch-statistics gradient needs. The recorded batch moments
  are the unit's, identical on every rank, so each rank's moments update is the same.
  Chunks stay sequential (MATLAB's staged mode updates the weights after each chunk, so
  chunks cannot run side by side without changing the algorithm); the ranks share each chunk.
  With ``W`` ranks each one holds about ``maxGpuImgs / W`` images at a time.
* **Loss.** Each rank's embeddings are all-gathered into the ``M x D`` batch (stage 1 in
  staged mode, gathered in float64 as ``embeddingMat``); FastAP's gradient is computed on the
  whole batch on every rank (identical inputs, identical result, no broadcast needed) and each
  rank seeds its backward with its own rows.
* **Gradients and updates.** Parameter derivatives are summed over the ranks
  (``all_reduce``, one flat buffer per dtype) and divided by the batch (plain) or chunk
  (staged) size in :class:`~reproduce.training.optimizer.McnAdam`, as MatConvNet does; every
  rank then takes the same update. The parameters and buffers are broadcast from rank 0 when
  the step is built, so the replicas start equal; all-reduce gives every rank the same sum, so
  they stay bit-identical to each other (:func:`replicas_equal` checks it).

Against one process on the same batch the result is equal to rounding, not bit for bit: the
per-channel sums of BatchNorm and the parameter derivatives are added in another order (per
rank, then across ranks), and BatchNorm's statistics are formed from float64 sums rather than
by ``native_batch_norm``. ``docs/distributed.md`` has the measured size of that.

Every unit must give each rank at least one image (``M >= W`` and, staged, every chunk of
at least ``W`` images); otherwise the step raises an :class:`~reproduce.errors.InputError`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

from reproduce.errors import InputError
from reproduce.evaluation.distributed import (
    DistributedContext,
    all_gather_rows,
    init_from_env,
    rank_slice,
)
from reproduce.training.batchnorm import McnBatchNorm2d, mcn_batchnorms, update_moments
from reproduce.training.optimizer import McnAdam
from reproduce.training.step import (
    StepResult,
    TrainStep,
    _has_positive,
    chunk_slices,
    embeddings_of,
)

__all__ = [
    "DistributedContext",
    "DistributedTrainStep",
    "SyncMcnBatchNorm2d",
    "all_gather_rows",
    "all_reduce_gradients",
    "broadcast_state",
    "init_from_env",
    "rank_slice",
    "replicas_equal",
    "sync_batchnorms",
]

def _world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group`` (the default group when ``None``)."""
    return dist.get_rank(group), dist.get_world_size(group)


def broadcast_state(model: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Copy rank 0's parameters and buffers (BatchNorm moments) to every rank."""
    src = dist.get_global_rank(group, 0) if group is not None else 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=src, group=group)


def replicas_equal(model: nn.Module, group: dist.ProcessGroup | None = None) -> bool:
    """Whether every rank's parameters and buffers equal rank 0's bit for bit (collective)."""
    src = dist.get_global_rank(group, 0) if group is not None else 0
    same = True
    for tensor in [*model.parameters(), *model.buffers()]:
        theirs = tensor.detach().clone()
        dist.broadcast(theirs, src=src, group=group)
        same &= torch.equal(theirs, tensor.detach())
    flag = torch.tensor([0.0 if same else 1.0], device=next(model.parameters()).device)
    dist.all_reduce(flag, group=group)
    return bool(flag.item() == 0)


def all_reduce_gradients(params: list[nn.Parameter],
                         group: dist.ProcessGroup | None = None) -> None:
    """Sum every parameter's ``.grad`` over the ranks (one flat buffer per dtype and device).
    A parameter without ``.grad`` on every rank keeps none (``McnAdam`` then skips it, as one
    process would); one with a ``.grad`` on some rank gets the sum (zeros elsewhere)."""
    if not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64,
                           device=params[0].device)
    dist.all_reduce(present, group=group)
    buckets: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p, n in zip(params, present.tolist(), strict=True):
        if n > 0:
            buckets.setdefault((p.dtype, p.device), []).append(p)
    for bucket in buckets.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in bucket])
        dist.all_reduce(flat, group=group)
        offset = 0
        for p in bucket:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()


class _SyncBatchStatistics(Function):
    """Normal-mode BatchNorm whose statistics and backward sums span the ranks of ``group``.

    Forward: ``sum x`` and the element count are all-reduced (float64) for the mean, then
    ``sum (x - mu32)^2`` for the biased variance (``mu32`` the mean in ``x``'s class; the
    shift is corrected exactly in float64). Backward: the full batch-statistics gradient
    ``dx = mult / sigma (dy - mean(dy) - xhat mean(dy xhat))`` with both means all-reduced;
    ``dmult`` and ``dbias`` are this rank's sums (the step sums them over the ranks)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, mult: Tensor, bias: Tensor, bn: SyncMcnBatchNorm2d
                ) -> Tensor:
        dims = (0, 2, 3)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        stats = torch.cat([x.sum(dims, dtype=torch.float64),
                           x.new_tensor([count, x.shape[0]], dtype=torch.float64)])
        dist.all_reduce(stats, group=bn.group)
        C = bn.num_channels  # noqa: N806
        n, images = stats[C], int(stats[C + 1].item())
        mu = stats[:C] / n
        mu32 = mu.to(x.dtype)
        centred = x - mu32.view(1, -1, 1, 1)
        ss = centred.square().sum(dims, dtype=torch.float64)
        dist.all_reduce(ss, group=bn.group)
        shift = mu32.to(torch.float64) - mu
        var = ss / n - shift.square()
        sigma = torch.sqrt(var + bn.epsilon)
        invstd = 1.0 / sigma
        coefficient = (mult.detach().to(torch.float64) * invstd).to(x.dtype)
        # (x - mu) with mu in float64: centred - shift, as x's class
        centred = centred - shift.to(x.dtype).view(1, -1, 1, 1)
        y = centred * coefficient.view(1, -1, 1, 1) + bias.detach().view(1, -1, 1, 1)
        with torch.no_grad():
            bn.batch_moments = torch.stack([mu.to(x.dtype), sigma.to(x.dtype)], dim=1)
            bn.batch_count = images
        ctx.save_for_backward(centred, invstd, mult)
        ctx.n = n
        ctx.bn = bn
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        centred, invstd, mult = ctx.saved_tensors
        dims = (0, 2, 3)
        dy = dy.contiguous()
        sum_dy = dy.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (dy * centred).sum(dims, dtype=torch.float64) * invstd
        local = torch.cat([sum_dy, sum_dy_xhat])
        total = local.clone()
        dist.all_reduce(total, group=ctx.bn.group)
        C = sum_dy.numel()  # noqa: N806
        n = ctx.n
        mean_dy, mean_dy_xhat = total[:C] / n, total[C:] / n
        coefficient = mult.detach().to(torch.float64) * invstd
        a = coefficient.to(dy.dtype).view(1, -1, 1, 1)
        b = (coefficient * mean_dy).to(dy.dtype).view(1, -1, 1, 1)
        c = (coefficient * invstd * mean_dy_xhat).to(dy.dtype).view(1, -1, 1, 1)
        dx = dy * a - b - centred * c
        dmult = sum_dy_xhat.to(mult.dtype)
        dbias = sum_dy.to(mult.dtype)
        return dx, dmult, dbias, None


class SyncMcnBatchNorm2d(McnBatchNorm2d):
    """:class:`McnBatchNorm2d` whose normal-mode statistics span the ranks of ``group`` (test
    mode is per image and needs no communication). Made by :func:`sync_batchnorms`."""

    group: dist.ProcessGroup | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Normal mode: the statistics of the images of all ranks; test mode: as the base."""
        if not self.training:
            return super().forward(x)
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"SyncMcnBatchNorm2d({self.num_channels}): expected N x "
                             f"{self.num_channels} x H x W, got {tuple(x.shape)}")
        return _SyncBatchStatistics.apply(x, self.mult, self.bias, self)


def sync_batchnorms(model: nn.Module, group: dist.ProcessGroup | None = None) -> int:
    """Make every :class:`McnBatchNorm2d` of ``model`` a :class:`SyncMcnBatchNorm2d` over
    ``group``, in place (the class of each module object is changed, so its parameters, the
    optimizer's references to them and any other reference to the module stay valid).
    Returns how many modules were changed."""
    changed = 0
    for bn in mcn_batchnorms(model):
        if type(bn) is McnBatchNorm2d:
            bn.__class__ = SyncMcnBatchNorm2d
            changed += 1
        bn.group = group  # type: ignore[attr-defined]
    return changed


class DistributedTrainStep(TrainStep):
    """:class:`TrainStep` over the ranks of ``group`` (see the module docstring).

    Same options as :class:`TrainStep`; every rank builds it with the same ones (and the same
    model and optimizer). ``broadcast`` copies rank 0's parameters and buffers to every rank
    first. The observer sees this rank's part: ``feats``/``dzdfeats`` of its own images."""

    def __init__(self, model: nn.Module, optimizer: McnAdam, *, num_bins: int = 10,
                 max_gpu_imgs: int = 256, mode: str = "auto", bn_mode: str = "normal",
                 gradient_dtype: torch.dtype = torch.float32, observer: Any = None,
                 group: dist.ProcessGroup | None = None, broadcast: bool = True) -> None:
        super().__init__(model, optimizer, num_bins=num_bins, max_gpu_imgs=max_gpu_imgs,
                         mode=mode, bn_mode=bn_mode, gradient_dtype=gradient_dtype,
                         observer=observer)
        if not dist.is_initialized():
            raise InputError("DistributedTrainStep: no process group (call init_from_env() "
                             "under torchrun first)")
        self.group = group
        self.rank, self.world = _world(group)
        sync_batchnorms(model, group)
        if broadcast:
            broadcast_state(model, group)

    def units(self, M: int) -> list[slice]:  # noqa: N803
        """The forward units of a batch of ``M``: the batch (plain) or its chunks."""
        if self.resolved_mode(M) == "plain":
            return [slice(0, M)]
        return chunk_slices(M, self.max_gpu_imgs)

    def _parts(self, unit: slice) -> list[slice]:
        """Every rank's part of ``unit``, as batch positions."""
        n = unit.stop - unit.start
        if n < self.world:
            raise InputError(f"distributed step: a unit of {n} images (batch or chunk "
                             f"{unit.start}:{unit.stop}) cannot give each of {self.world} "
                             f"ranks an image; choose M and maxGpuImgs so that every chunk "
                             f"has at least {self.world}")
        return [slice(unit.start + s.start, unit.start + s.stop)
                for s in (rank_slice(n, r, self.world) for r in range(self.world))]

    def local_positions(self, M: int) -> Tensor:  # noqa: N803
        """The batch positions this rank processes, in the order ``__call__`` expects them."""
        return torch.cat([torch.arange(self._parts(u)[self.rank].start,
                                       self._parts(u)[self.rank].stop)
                          for u in self.units(M)])

    def __call__(self, images: Tensor, labels: Tensor) -> StepResult:
        """Train on one batch: ``labels`` all ``M``; ``images`` all ``M`` (this rank takes its
        part) or only this rank's, in :meth:`local_positions` order."""
        if labels.dim() != 1 or labels.shape[0] < 1 or images.dim() != 4:
            raise InputError(f"training step: images must be N x C x H x W and labels M, got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        M = labels.shape[0]  # noqa: N806
        positions = self.local_positions(M)
        if images.shape[0] == M and self.world > 1:
            images = images[positions]
        elif images.shape[0] != positions.numel():
            raise InputError(f"distributed step: rank {self.rank} expects the full batch of "
                             f"{M} images or its {positions.numel()}, got {images.shape[0]}")
        mode = self.resolved_mode(M)
        if mode == "plain":
            return self._plain(images, labels)
        return self._staged(images, labels, accumulate=mode == "accumulate")

    def _local(self, unit: slice, offset: int) -> tuple[slice, slice, list[int]]:
        """This rank's part of ``unit`` as batch positions and as rows of its own images
        (starting at ``offset``), and every rank's part size."""
        parts = self._parts(unit)
        mine = parts[self.rank]
        size = mine.stop - mine.start
        return mine, slice(offset, offset + size), [p.stop - p.start for p in parts]

    def _reduce_and_step(self, batch_size: int) -> None:
        """Sum the derivatives over the ranks, then one ``McnAdam`` update with ``B``."""
        all_reduce_gradients([p for p in self.model.parameters() if p.requires_grad],
                             self.group)
        self.optimizer.step(batch_size=batch_size)

    def _plain(self, images: Tensor, labels: Tensor) -> StepResult:
        """``train``: one normal-mode forward of every rank's part (BN over all ``M``), FastAP
        on the gathered batch, each rank's rows of its gradient back, one summed update."""
        M = labels.shape[0]  # noqa: N806
        device = self._device()
        mine, _, sizes = self._local(slice(0, M), 0)
        self._gradient_pass_mode()
        self.optimizer.zero_grad(set_to_none=True)
        feats = embeddings_of(self.model, images.to(device))
        E = all_gather_rows(feats.detach(), sizes, self.group)  # noqa: N806
        E.requires_grad_(True)
        loss = self.loss(E, labels.to(device))
        loss.backward()
        seed = E.grad[mine]
        feats.backward(seed)
        self._observe("chunk_backward", index=0, chunk=mine, feats=feats.detach(),
                      dzdfeats=seed)
        self._reduce_and_step(M)
        update_moments(self.model)
        self._observe("chunk_step", index=0, chunk=slice(0, M))
        objective = 1.0 - float(loss.detach()) if _has_positive(labels) else float("nan")
        return StepResult("plain", objective, 1, [M])

    def _staged(self, images: Tensor, labels: Tensor, *, accumulate: bool) -> StepResult:
        """``train_staged`` (or accumulate) with every chunk shared by the ranks."""
        M = labels.shape[0]  # noqa: N806
        device = self._device()
        chunks = chunk_slices(M, self.max_gpu_imgs)
        local = []
        offset = 0
        for sub in chunks:
            mine, rows, sizes = self._local(sub, offset)
            local.append((sub, mine, rows, sizes))
            offset = rows.stop
        # stage 1: test-mode embeddings of every rank's part, gathered per chunk in double
        self.model.eval()
        parts = []
        with torch.inference_mode():
            for s, (sub, _, rows, sizes) in enumerate(local):
                feats = embeddings_of(self.model, images[rows].to(device))
                parts.append(all_gather_rows(feats.to(torch.float64), sizes, self.group))
                self._observe("stage1", index=s, chunk=sub, feats=feats)
        embeddingMat = torch.cat(parts)  # noqa: N806 (MATLAB name)
        del parts
        # stage 2: FastAP's gradient on the whole batch, on every rank alike
        gradientMat, obj_staged = self._batch_gradient(embeddingMat, labels)  # noqa: N806
        # stage 3: per chunk a normal-mode forward (BN over the whole chunk), this rank's rows
        self._gradient_pass_mode()
        self.optimizer.zero_grad(set_to_none=True)
        for s, (sub, mine, rows, _) in enumerate(local):
            if not accumulate:
                self.optimizer.zero_grad(set_to_none=True)
            feats = embeddings_of(self.model, images[rows].to(device))
            seed = gradientMat[mine].to(feats.dtype)
            feats.backward(seed)
            self._observe("chunk_backward", index=s, chunk=mine, feats=feats.detach(),
                          dzdfeats=seed)
            if not accumulate:
                self._reduce_and_step(sub.stop - sub.start)
            update_moments(self.model)
            if not accumulate:
                self._observe("chunk_step", index=s, chunk=sub)
        if accumulate:
            self._reduce_and_step(M)
            self._observe("chunk_step", index=len(chunks) - 1, chunk=slice(0, M))
        sizes = [sub.stop - sub.start for sub in chunks]
        return StepResult("accumulate" if accumulate else "staged", obj_staged,
                          1 if accumulate else len(chunks), sizes)
