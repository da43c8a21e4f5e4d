"""The authors' minibatch samplers: ``train_hard`` (meta-class pairs) and ``train_hard_vid``.

MATLAB names are kept so that this file can be read next to ``run_demo.m``'s ``get_imdb``
(the meta-class analysis) and ``train_hard.m``'s ``processEpoch``:

* :func:`analyse_metaclasses` is ``get_imdb``'s analysis: over the training images (``set``
  column 1 equal to 1), meta-classes in ascending id, inside each its classes in ascending
  class id, each class the list of its training-subset positions in file order.
* :func:`train_hard_epoch` is one epoch of ``train_hard``: per meta-class ``i`` a random
  permutation of its classes, concatenated into ``metaC_idx{i}``; all pairs ``(a, b)``,
  ``a < b``, in one random order ``metaPairs``; per pair ``batchesPerMetaPair`` consecutive
  batches, each the next ``M/2`` entries of ``metaC_idx{a}`` then of ``metaC_idx{b}`` through
  a cursor per meta-class that wraps (``mod(I-1, num)+1``). Images inside a class are never
  shuffled.
* :func:`train_hard_vid_epoch` is ``train_hard_vid``: meta id 0 must exist; no pairs, for
  ``m = 2..Nmeta`` in order ``ceil(2 num_m / M)`` batches of ``[M/2 of meta 0; M/2 of m]``.

Everything is 0-based here (MATLAB's positions minus 1). The batches are built without a
Python loop over batches: the ``k``-th half-batch a meta-class contributes covers its list
entries ``(k M/2 + 0..M/2-1) mod num``, which is exactly where MATLAB's wrapping cursor
points, so all halves are one gather.

Randomness comes from a :class:`PermutationSource`. MATLAB's ``rng(epoch + 42)`` followed by
``randperm`` (Mersenne twister plus MATLAB's own permutation algorithm) cannot be replayed
bit for bit from Python, so the default source, :class:`NumpyPermutations`, is a numpy
generator seeded with ``epoch + random_seed`` (42) at the start of each epoch: reproducible,
resumable, and the same *distribution* of batches as the authors', not the same batches.
:class:`ReplayPermutations` feeds recorded draws (e.g. a fixture's ``perms``) in order, and
then the batches are the recorded ones exactly.

The training-subset index defect (docs/pipeline.md section T2): the released code stores
training-subset *positions* and uses them as image indices. The samplers return image
indices (``batches_img``, the intent) by default; ``literal_subset_indices=True`` returns
the positions as the released code used them (``batches``). The two agree when the training
rows come first in the file (Stanford Online Products).

Meta-class with a single training image: the released code crashes there (its
``metaC_idx{i}`` is a scalar, indexing it with a row gives a row, and the batch
concatenation fails). We handle it as the wrapping cursor intends: the half-batch is that
image ``M/2`` times. An empty meta-class (possible only through :class:`MetaClassIndex`
built by hand) is an error.

:class:`ClassBalancedSampler` is for datasets without meta-classes and is *our* sampler, a
deviation from the authors (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch.utils.data import Sampler

from reproduce.errors import InputError

__all__ = [
    "ClassBalancedSampler",
    "EpochPlan",
    "MetaClassIndex",
    "MetaClassSampler",
    "NumpyPermutations",
    "PermutationSource",
    "ReplayPermutations",
    "analyse_metaclasses",
    "train_hard_epoch",
    "train_hard_vid_epoch",
]

#: ``train_hard.m``'s ``opts.randomSeed`` as ``run_demo.m`` sets it: ``rng(epoch + 42)``.
RANDOM_SEED = 42
SAMPLERS = ("train_hard", "train_hard_vid")


@runtime_checkable
class PermutationSource(Protocol):
    """Where the sampler's randomness comes from: one ``randperm`` per call, in draw order."""

    def randperm(self, n: int) -> np.ndarray:
        """A 0-based permutation of ``range(n)`` (MATLAB's ``randperm(n) - 1``)."""
        ...


class NumpyPermutations:
    """The default source: ``numpy.random.default_rng(seed).permutation`` (not MATLAB's)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def randperm(self, n: int) -> np.ndarray:
        """A 0-based random permutation of ``range(n)``."""
        return self._rng.permutation(int(n))


class ReplayPermutations:
    """Recorded draws, handed out in order: ``perms`` are 1-based (as MATLAB saved them).

    Each draw must be a permutation of ``1..n`` for the ``n`` asked for, else ``InputError``.
    """

    def __init__(self, perms: Sequence[Any], *, one_based: bool = True) -> None:
        shift = 1 if one_based else 0
        self._perms = [np.asarray(p, dtype=np.int64).ravel() - shift for p in perms]
        self._next = 0

    def randperm(self, n: int) -> np.ndarray:
        """The next recorded draw, checked to be a permutation of ``range(n)``."""
        if self._next >= len(self._perms):
            raise InputError(f"replayed randperm: draw {self._next + 1} asked for, only "
                             f"{len(self._perms)} recorded")
        perm = self._perms[self._next]
        self._next += 1
        if perm.size != n or not np.array_equal(np.sort(perm), np.arange(n)):
            raise InputError(f"replayed randperm: draw {self._next} is not a permutation of "
                             f"1..{n} (it has {perm.size} entries)")
        return perm

    @property
    def remaining(self) -> int:
        """How many recorded draws have not been used."""
        return len(self._perms) - self._next


@dataclass(frozen=True)
class MetaClassIndex:
    """``imdb.metaclass`` of ``get_imdb``: per meta-class its classes' training positions.

    ``positions`` holds every meta-class's positions, meta-class after meta-class, inside
    each class after class (ascending class id), inside a class in file order;
    ``group_starts[i]`` / ``group_sizes[i]`` locate the classes of meta-class ``i`` in it
    (offsets into ``positions``). ``train_idx`` maps a training-subset position to its image
    index (0-based). ``meta_ids`` ascending; ``meta_num[i]`` = images of meta-class ``i``.
    """

    meta_ids: np.ndarray
    meta_num: np.ndarray
    group_starts: tuple[np.ndarray, ...]
    group_sizes: tuple[np.ndarray, ...]
    group_class_ids: tuple[np.ndarray, ...]
    positions: np.ndarray
    train_idx: np.ndarray

    @property
    def Nmeta(self) -> int:  # noqa: N802 (MATLAB name)
        """Number of meta-classes."""
        return int(self.meta_ids.size)

    def groups(self, i: int) -> list[np.ndarray]:
        """``metaC{i}.groups``: the position list of each class of meta-class ``i``."""
        return [self.positions[s:s + n] for s, n in zip(self.group_starts[i],
                                                           self.group_sizes[i], strict=True)]



def training_positions(n: int, train: np.ndarray, who: str) -> np.ndarray:
    """Positions of the training images among ``n``: ``train`` is a boolean mask or the imdb
    ``set`` column (1 = training); for VehicleID's ``n x 4`` ``set``, its first column (as
    ``train_hard_vid.m`` line 55 reads it). ``who`` names the caller in errors."""
    train = np.asarray(train)
    if train.ndim == 2:
        train = train[:, 0]
    if train.shape != (n,):
        raise InputError(f"{who}: {n} label rows but a training mask/set of shape "
                         f"{train.shape}")
    mask = train.astype(bool) if train.dtype == bool else train == 1
    positions = np.flatnonzero(mask)
    if positions.size == 0:
        raise InputError(f"{who}: no training images (set == 1)")
    return positions

def analyse_metaclasses(labels: np.ndarray, train: np.ndarray) -> MetaClassIndex:
    """``get_imdb``'s meta-class analysis (``run_demo.m`` lines 148-164).

    ``labels``: ``n x k`` (column 0 class, column 1 meta-class id); ``train``: a boolean
    mask of the ``n`` images, or the ``set`` column/matrix (1 = training; for VehicleID's
    ``n x 4`` ``set`` column 0 is used, as ``train_hard_vid.m`` line 55 does).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] < 2:
        raise InputError(f"meta-class analysis: labels must be n x 2 or wider (class, "
                         f"meta-class), got shape {labels.shape}")
    train_idx = training_positions(labels.shape[0], train, "meta-class analysis")
    Ycls = labels[train_idx, 0]
    Ymeta = labels[train_idx, 1]
    # positions sorted by meta-class, then class, then file order (a stable sort)
    order = np.lexsort((np.arange(train_idx.size), Ycls, Ymeta))
    meta_sorted, cls_sorted = Ymeta[order], Ycls[order]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (meta_sorted[1:] != meta_sorted[:-1]) | (cls_sorted[1:] != cls_sorted[:-1])
    group_first = np.flatnonzero(new_group)
    group_size = np.diff(np.append(group_first, order.size))
    group_meta = meta_sorted[group_first]
    meta_ids, meta_first_group = np.unique(group_meta, return_index=True)
    meta_bounds = np.append(meta_first_group, group_first.size)
    starts, sizes, cls_ids, nums = [], [], [], []
    for i in range(meta_ids.size):
        sel = slice(meta_bounds[i], meta_bounds[i + 1])
        starts.append(group_first[sel])
        sizes.append(group_size[sel])
        cls_ids.append(cls_sorted[group_first[sel]])
        nums.append(int(group_size[sel].sum()))
    return MetaClassIndex(meta_ids=meta_ids, meta_num=np.asarray(nums, dtype=np.int64),
                          group_starts=tuple(starts), group_sizes=tuple(sizes),
                          group_class_ids=tuple(cls_ids), positions=order.astype(np.int64),
                          train_idx=train_idx.astype(np.int64))


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of batches, 0-based, with the intermediate MATLAB variables.

    ``batches`` (``numBatches x M``) are training-subset positions as the released code built
    them; ``batches_img`` the image indices they denote (``train_idx[batches]``). Rows
    ``0..M/2-1`` of a batch come from the pair's first meta-class (``train_hard_vid``: meta
    id 0). ``metaPairs`` is ``numPairs x 2`` (meta-class indices, ``train_hard`` only, else
    ``None``); ``numBatches`` the total, ``batches_per_meta`` ``train_hard_vid``'s per
    meta-class counts (0 for meta id 0; ``None`` for ``train_hard``).
    """

    metaC_idx: list[np.ndarray]
    metaPairs: np.ndarray | None
    batches: np.ndarray
    batches_img: np.ndarray
    batches_per_meta: np.ndarray | None = None

    @property
    def numBatches(self) -> int:  # noqa: N802 (MATLAB name)
        """Number of batches in the epoch."""
        return int(self.batches.shape[0])


def _check_batch_size(batchSize: int) -> int:  # noqa: N803 (MATLAB name)
    """``assert(mod(batchSize, 2) == 0)`` as a clear error; returns ``M/2``."""
    if isinstance(batchSize, bool) or int(batchSize) != batchSize or batchSize < 2:
        raise InputError(f"sampler: batch size M must be a positive even integer, "
                         f"got {batchSize!r}")
    if int(batchSize) % 2:
        raise InputError(f"sampler: batch size M must be even (half from each meta-class), "
                         f"got {batchSize}")
    return int(batchSize) // 2


def _permute_classes(index: MetaClassIndex, source: PermutationSource) -> list[np.ndarray]:
    """``metaC_idx{i} = cat(1, G{randperm(numel(G))})`` for every meta-class, in order."""
    metaC_idx = []
    for i in range(index.Nmeta):
        starts, sizes = index.group_starts[i], index.group_sizes[i]
        perm = np.asarray(source.randperm(starts.size), dtype=np.int64)
        s, n = starts[perm], sizes[perm]
        total = int(n.sum())
        if total == 0:
            raise InputError(f"sampler: meta-class {index.meta_ids[i]} has no images")
        # concatenate the permuted classes' slices without a Python loop over classes
        shift = np.repeat(s - (np.cumsum(n) - n), n)
        metaC_idx.append(index.positions[shift + np.arange(total)])
    return metaC_idx


def _halves(metaC_idx: list[np.ndarray], half_meta: np.ndarray, half: int) -> np.ndarray:
    """The half-batches (``len(half_meta) x half``) of a sequence of meta-classes.

    The ``k``-th time meta-class ``i`` appears it gives ``metaC_idx{i}`` entries
    ``(k half + 0..half-1) mod num_i``: MATLAB's wrapping cursor ``cur(i)``.
    """
    num = np.array([a.size for a in metaC_idx], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(num)[:-1]))
    flat = np.concatenate(metaC_idx)
    # occurrence rank of each half within its meta-class (a stable group-wise cumcount)
    order = np.argsort(half_meta, kind="stable")
    sorted_meta = half_meta[order]
    first = np.searchsorted(sorted_meta, sorted_meta, side="left")
    rank = np.empty_like(half_meta)
    rank[order] = np.arange(half_meta.size) - first
    within = (rank[:, None] * half + np.arange(half)[None, :]) % num[half_meta][:, None]
    return flat[offsets[half_meta][:, None] + within]


def _plan(index: MetaClassIndex, metaC_idx: list[np.ndarray], first: np.ndarray,
          second: np.ndarray, half: int, metaPairs: np.ndarray | None,  # noqa: N803
          batches_per_meta: np.ndarray | None) -> EpochPlan:
    """Batches ``[half of first[b]; half of second[b]]`` for every batch ``b``."""
    half_meta = np.stack([first, second], axis=1).ravel()  # batch order, a-half first
    batches = _halves(metaC_idx, half_meta, half).reshape(first.size, 2 * half)
    return EpochPlan(metaC_idx=metaC_idx, metaPairs=metaPairs, batches=batches,
                     batches_img=index.train_idx[batches], batches_per_meta=batches_per_meta)


def _check_train_hard(index: MetaClassIndex, batchesPerMetaPair: int) -> None:  # noqa: N803
    """``train_hard``'s configuration: a positive ``batchesPerMetaPair``, two meta-classes."""
    bpmp = batchesPerMetaPair
    if isinstance(bpmp, bool) or int(bpmp) != bpmp or bpmp < 1:
        raise InputError(f"train_hard: batchesPerMetaPair must be a positive integer, "
                         f"got {bpmp!r}")
    if index.Nmeta < 2:
        raise InputError(f"train_hard: needs at least two meta-classes (batches pair them), "
                         f"the training images have {index.Nmeta}")


def _check_train_hard_vid(index: MetaClassIndex) -> None:
    """``train_hard_vid``'s configuration: meta id 0 first, and another meta-class."""
    if index.Nmeta == 0 or index.meta_ids[0] != 0:
        raise InputError(f"train_hard_vid: meta-class id 0 (no attribute) must exist among the "
                         f"training images; meta ids are {index.meta_ids.tolist()[:10]}")
    if index.Nmeta < 2:
        raise InputError("train_hard_vid: needs meta-classes besides id 0")


def train_hard_epoch(index: MetaClassIndex, batchSize: int,  # noqa: N803 (MATLAB names)
                     batchesPerMetaPair: int, source: PermutationSource) -> EpochPlan:
    """One epoch of ``train_hard``'s batches (``train_hard.m`` lines 251-272, 287-309).

    Draws, in order: one permutation of the classes of each meta-class, then one of the
    meta-class pairs. ``numBatches = C(Nmeta, 2) * batchesPerMetaPair``.
    """
    half = _check_batch_size(batchSize)
    _check_train_hard(index, batchesPerMetaPair)
    metaC_idx = _permute_classes(index, source)
    a, b = np.triu_indices(index.Nmeta, k=1)  # (1,2), (1,3), ..., (2,3), ...: MATLAB's order
    pairs = np.stack([a, b], axis=1).astype(np.int64)
    pairs = pairs[np.asarray(source.randperm(pairs.shape[0]), dtype=np.int64)]
    bpmp = int(batchesPerMetaPair)
    first = np.repeat(pairs[:, 0], bpmp)
    second = np.repeat(pairs[:, 1], bpmp)
    return _plan(index, metaC_idx, first, second, half, pairs, None)


def train_hard_vid_epoch(index: MetaClassIndex, batchSize: int,  # noqa: N803 (MATLAB name)
                         source: PermutationSource) -> EpochPlan:
    """One epoch of ``train_hard_vid``'s batches (``train_hard_vid.m`` lines 240-259, 274-285).

    Meta id 0 (no attribute) must exist and is the first meta-class; draws: one permutation
    of the classes of each meta-class. For ``m = 2..Nmeta`` (in order, not shuffled)
    ``ceil(2 num_m / M)`` batches of ``[M/2 of meta 0; M/2 of meta m]``.
    """
    half = _check_batch_size(batchSize)
    _check_train_hard_vid(index)
    metaC_idx = _permute_classes(index, source)
    per_meta = np.zeros(index.Nmeta, dtype=np.int64)
    per_meta[1:] = -(-2 * index.meta_num[1:] // (2 * half))  # ceil(2 num / M)
    second = np.repeat(np.arange(index.Nmeta, dtype=np.int64), per_meta)
    first = np.zeros_like(second)
    return _plan(index, metaC_idx, first, second, half, None, per_meta)


def _as_epoch(epoch: int) -> int:
    """An epoch number (>= 1, as MATLAB counts) or ``InputError``."""
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 1:
        raise InputError(f"sampler: epoch must be a positive integer (1-based), got {epoch!r}")
    return int(epoch)


class _EpochBatchSampler(Sampler[list[int]]):
    """A batch sampler over epochs of precomputed batches, resumable mid-epoch.

    Subclasses provide ``_build(epoch) -> np.ndarray`` (``numBatches x M`` dataset indices).
    ``state_dict()`` is ``{"epoch", "position"}``: ``position`` counts the batches this
    sampler has yielded in the epoch. A ``DataLoader`` with workers fetches a few batches
    ahead, so a training loop that checkpoints should store the number of batches it has
    *trained* as ``position`` instead.
    """

    def __init__(self) -> None:
        self.epoch = 1
        self.position = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _build(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def batches_for(self, epoch: int) -> np.ndarray:
        """The epoch's batches (``numBatches x M`` dataset indices), built once per epoch."""
        epoch = _as_epoch(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._build(epoch))
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Select the (1-based) epoch; a different epoch starts at its first batch."""
        epoch = _as_epoch(epoch)
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches_for(self.epoch)
        while self.position < batches.shape[0]:
            batch = batches[self.position].tolist()
            self.position += 1
            yield batch

    def __len__(self) -> int:
        return int(self.batches_for(self.epoch).shape[0])

    def state_dict(self) -> dict[str, int]:
        """Where the sampler stands: ``{"epoch": e, "position": batches yielded in e}``."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved :meth:`state_dict` (mid-epoch included)."""
        try:
            epoch, position = state["epoch"], state["position"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"sampler state must have 'epoch' and 'position', got "
                             f"{state!r}") from exc
        self.epoch = _as_epoch(epoch)
        total = len(self)
        if isinstance(position, bool) or int(position) != position or not 0 <= position <= total:
            raise InputError(f"sampler state: position must be in 0..{total} for epoch "
                             f"{self.epoch}, got {position!r}")
        self.position = int(position)


class MetaClassSampler(_EpochBatchSampler):
    """The authors' sampler as a ``torch.utils.data`` batch sampler (``batch_sampler=``).

    ``labels`` (``n x >=2``: class, meta-class) and ``train`` (mask or ``set``) describe the
    whole dataset; the sampler yields lists of dataset (image) indices, 0-based, one list per
    batch, ``numBatches`` per epoch. ``sampler``: ``"train_hard"`` or ``"train_hard_vid"``.
    ``source_for_epoch(epoch)`` gives the epoch's :class:`PermutationSource`; the default
    seeds a numpy generator with ``epoch + random_seed`` (MATLAB's ``rng(epoch + 42)``, not
    its stream). ``literal_subset_indices``: yield training-subset positions as the released
    code did (the index defect) instead of image indices.
    """

    def __init__(self, labels: np.ndarray, train: np.ndarray, batchSize: int,  # noqa: N803
                 batchesPerMetaPair: int = 5, *, sampler: str = "train_hard",
                 random_seed: int = RANDOM_SEED,
                 source_for_epoch: Callable[[int], PermutationSource] | None = None,
                 literal_subset_indices: bool = False) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.index = analyse_metaclasses(labels, train)
        self.batchSize = int(_check_batch_size(batchSize) * 2)
        self.batchesPerMetaPair = batchesPerMetaPair
        self.sampler = sampler
        self.random_seed = int(random_seed)
        self.source_for_epoch = source_for_epoch or (
            lambda epoch: NumpyPermutations(epoch + self.random_seed))
        self.literal_subset_indices = bool(literal_subset_indices)
        self._validate()

    def _validate(self) -> None:
        """The configuration errors an epoch would raise, now, without drawing anything."""
        if self.sampler == "train_hard":
            _check_train_hard(self.index, self.batchesPerMetaPair)
        else:
            _check_train_hard_vid(self.index)

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's :class:`EpochPlan` (a fresh source for the epoch, as ``rng`` resets)."""
        source = self.source_for_epoch(_as_epoch(epoch))
        if self.sampler == "train_hard":
            return train_hard_epoch(self.index, self.batchSize, self.batchesPerMetaPair, source)
        return train_hard_vid_epoch(self.index, self.batchSize, source)

    def _build(self, epoch: int) -> np.ndarray:
        plan = self.plan(epoch)
        return plan.batches if self.literal_subset_indices else plan.batches_img


class ClassBalancedSampler(_EpochBatchSampler):
    """A sampler for datasets without meta-classes: OURS, not the authors'.

    Per epoch (numpy generator seeded ``epoch + random_seed``): the training classes in a
    random order, each class's images shuffled, concatenated into one list; batches are
    consecutive ``M`` entries of that list, the last one completed by wrapping to the start;
    ``numBatches = ceil(T / M)`` for ``T`` training images, so every image is seen once per
    epoch (plus the wrap). The ordering is that of ``run_demo.m``'s ``shuffle`` (its random
    minibatch ablation), but cutting it into batches like this is our choice: the released
    ``train_hard`` has no such path. Classes come as contiguous runs, so most queries of a
    batch have positives, which FastAP needs.
    """

    def __init__(self, labels: np.ndarray, train: np.ndarray, batchSize: int,  # noqa: N803
                 *, random_seed: int = RANDOM_SEED) -> None:
        super().__init__()
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None]
        self.train_idx = training_positions(labels.shape[0], train, "class-balanced sampler")
        if isinstance(batchSize, bool) or int(batchSize) != batchSize or batchSize < 2:
            raise InputError(f"class-balanced sampler: batch size must be an integer >= 2, "
                             f"got {batchSize!r}")
        self.batchSize = int(batchSize)
        self.random_seed = int(random_seed)
        cls = labels[self.train_idx, 0]
        self._order = np.argsort(cls, kind="stable")
        _, self._starts, self._sizes = np.unique(cls[self._order], return_index=True,
                                                 return_counts=True)

    def _build(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(epoch + self.random_seed)
        perm = rng.permutation(self._sizes.size)
        s, n = self._starts[perm], self._sizes[perm]
        total = int(n.sum())
        group = np.repeat(np.arange(n.size), n)
        within = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        # shuffle inside each class: sort by (class run, random key)
        key = rng.random(total)
        inner = np.lexsort((key, group))
        lst = self._order[np.repeat(s, n) + within][inner]
        M = self.batchSize
        nb = -(-total // M)
        take = np.arange(nb * M) % total
        return self.train_idx[lst[take]].reshape(nb, M)
