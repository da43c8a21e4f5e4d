"""Several processes under ``torchrun``: joining the process group, splitting work over the
ranks, gathering rows back in order, and embedding an image list with every rank a shard.

These are the launcher pieces shared by ``fastap evaluate`` and the distributed training step
(:mod:`reproduce.training.distributed` builds on them; evaluation never imports training).

:func:`extract_embeddings_distributed` cuts the image list into the batches one process would
form (``batch_size`` consecutive images from the start) and gives each rank a consecutive run
of whole batches (:func:`rank_slice` over the batches). Every batch therefore holds the same
images as in one process, so on the same kind of device the gathered features are the
single-process ones bit for bit, in the list's order. With a cache, each rank caches its own
shard (the key holds the shard's image list); keep ``chunk_size`` a multiple of
``batch_size`` (the default 1024 is, for powers of two) so cached chunks cut the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from converters.fastap.card import ModelCard
from reproduce.errors import InputError
from reproduce.evaluation.embeddings import DEFAULT_CHUNK, extract_embeddings
from reproduce.evaluation.preprocess import Preprocessing

__all__ = [
    "TORCHRUN_VARS",
    "DistributedContext",
    "all_gather_rows",
    "batch_shard",
    "extract_embeddings_distributed",
    "init_from_env",
    "launched_by_torchrun",
    "rank_slice",
]

#: the environment ``torchrun`` sets for every process
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its rank, the world size, its local rank, device, backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE > 1``)."""
    return all(v in os.environ for v in TORCHRUN_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(backend: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` set up (``env://``: ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). ``backend``: ``nccl`` when CUDA is
    available (one GPU per process, ``cuda:LOCAL_RANK`` made the current device), else
    ``gloo`` (CPU). Joins once; later calls describe the same group."""
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise InputError(f"distributed run: environment variables {missing} not set; launch "
                         f"with torchrun (e.g. torchrun --nproc_per_node=2 ...)")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"distributed run: LOCAL_RANK {local_rank} but only "
                             f"{torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device,
                              dist.get_backend())


def rank_slice(M: int, rank: int, world: int) -> slice:  # noqa: N803 (MATLAB's M)
    """Rank ``rank``'s consecutive part of ``M`` items over ``world`` ranks: sizes
    ``ceil``/``floor(M / world)``, the ``M mod world`` larger parts first (as
    ``numpy.array_split``)."""
    if world < 1 or not 0 <= rank < world or M < 0:
        raise InputError(f"rank_slice: need 0 <= rank < world and M >= 0, got rank {rank}, "
                         f"world {world}, M {M}")
    base, extra = divmod(M, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def all_gather_rows(local: Tensor, sizes: list[int],
                    group: dist.ProcessGroup | None = None) -> Tensor:
    """The rows of every rank, concatenated in rank order (rank ``r`` holds ``sizes[r]``
    rows; parts are padded to the largest for the collective and cut back)."""
    most = max(sizes)
    padded = local.new_zeros((most, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def batch_shard(n: int, batch_size: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s images of a list of ``n``: a consecutive run of whole batches."""
    batches = rank_slice(-(-n // batch_size), rank, world)
    return slice(min(n, batches.start * batch_size), min(n, batches.stop * batch_size))


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where the group's tensors must live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def extract_embeddings_distributed(model: nn.Module, card: ModelCard, paths: Sequence[Path],
                                   preprocessing: Preprocessing, batch_size: int = 32,
                                   workers: int = 0,
                                   cache_dir: str | os.PathLike[str] | None = None,
                                   chunk_size: int = DEFAULT_CHUNK, progress: bool = True,
                                   device: str = "cpu",
                                   group: dist.ProcessGroup | None = None,
                                   everywhere: bool = False) -> np.ndarray | None:
    """:func:`~reproduce.evaluation.embeddings.extract_embeddings` with each rank of
    ``group`` embedding its shard (:func:`batch_shard`); the ``N x D`` float32 features, in
    the order of ``paths``, are returned on rank 0 (on every rank with ``everywhere``),
    ``None`` on the others. Every rank must call it with the same list and options."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no images to embed")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    shards = [batch_shard(len(paths), batch_size, r, world) for r in range(world)]
    mine = shards[rank]
    local = None
    if mine.stop > mine.start:
        local = extract_embeddings(model, card, paths[mine], preprocessing,
                                   batch_size=batch_size, workers=workers, cache_dir=cache_dir,
                                   chunk_size=chunk_size, progress=progress and rank == 0,
                                   device=device)
    where = _collective_device(group)
    dim = torch.tensor([0 if local is None else local.shape[1]], device=where)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX, group=group)
    rows = torch.zeros((0, int(dim.item())), dtype=torch.float32, device=where) \
        if local is None else torch.from_numpy(np.ascontiguousarray(local)).to(where)
    if rows.shape[1] != int(dim.item()):
        raise InputError(f"distributed extraction: rank {rank} produced {rows.shape[1]}-D "
                         f"features, another rank {int(dim.item())}-D")
    gathered = all_gather_rows(rows, [s.stop - s.start for s in shards], group)
    if rank != 0 and not everywhere:
        return None
    return gathered.cpu().numpy()
