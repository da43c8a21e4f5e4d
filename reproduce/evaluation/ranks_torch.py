"""The positive-ranking pass of :mod:`reproduce.evaluation.recall` in torch, for a GPU.

Same inputs, same rules, same output (:class:`~reproduce.evaluation.recall.PositiveRanks`):
distances ``2 - 2 Xq Xdb'`` in the features' precision (``-2`` times the product, then
``+ 2``: one rounding, as MATLAB), the own entry set to ``Inf`` under ``removeDiag``, order
by distance with ties by index and NaN last. Instead of the CPU pass's row-by-row counting
it ranks every positive of a chunk at once: for a positive at distance ``t`` and index
``j`` of its query's row, ``rank = #(row < t) + #(row[:j] == t)`` (for ``t`` NaN: every
non-NaN item plus the NaNs before ``j``), on batches of gathered rows. The own entry is then
taken out of the ranks used for MAP@R exactly as on the CPU.

Memory: one chunk of distance rows (``chunk_bytes``) plus a batch of gathered rows and its
boolean temporaries (about ``chunk_bytes / 2`` together), plus the features; with the
default 1 GiB an SOP-size search (60,502 x 512 float32) needs about 2 GB of device memory.
TF32 is switched off during the products (:func:`full_precision_matmul`, also used for the
embedding extraction) so that a GPU rounds like an ordinary float32 product (see
``docs/metrics.md`` on what can still differ from the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from reproduce.evaluation.recall import (
    NO_POSITIVE,
    PositiveRanks,
    SearchInputs,
    chunk_positives,
    prepare_search,
    rows_per_chunk,
)

DEVICE_CHUNK_BYTES = 2**30
"""Bytes of distance rows per chunk on a device."""


@contextmanager
def full_precision_matmul() -> Iterator[None]:
    """float32 products without TF32 (restored afterwards)."""
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(precision)


def _sort_positives(row: torch.Tensor, col: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Permutation to (row, NaN last, distance, index) order: stable sorts from the last key
    to the first (``col`` is already ascending within each row)."""
    nan = torch.isnan(d)
    perm = torch.argsort(torch.where(nan, torch.zeros_like(d), d), stable=True)
    perm = perm[torch.argsort(nan[perm].to(torch.uint8), stable=True)]
    return perm[torch.argsort(row[perm], stable=True)]


def _entry_ranks(D: torch.Tensor, row: torch.Tensor, col: torch.Tensor, t: torch.Tensor,
                 batch: int) -> torch.Tensor:
    """For each entry (row, col, distance t): items ahead of it in its row's stable
    ascending order, NaN last; ``batch`` entries' rows gathered at a time."""
    out = torch.empty(len(row), dtype=torch.int64, device=D.device)
    positions = torch.arange(D.shape[1], device=D.device)
    for a in range(0, len(row), batch):
        b = min(len(row), a + batch)
        lines = D[row[a:b]]
        tt = t[a:b, None]
        t_nan = torch.isnan(tt)
        lines_nan = torch.isnan(lines)
        before = positions[None, :] < col[a:b, None]
        less = torch.where(t_nan[:, 0], (~lines_nan).sum(1), (lines < tt).sum(1))
        equal = (lines == tt) | (lines_nan & t_nan)
        out[a:b] = less + (equal & before).sum(1)
    return out


def _chunk(D: torch.Tensor, search: SearchInputs, a: int, batch: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-positive ranks of queries ``a:a+n`` and their top-R entries ``(query, rank)``."""
    n = D.shape[0]
    first = np.full(n, NO_POSITIVE, dtype=np.int64)
    row_np, col_np, seg_start = chunk_positives(search, a, a + n)
    if not len(row_np):
        return first, np.zeros(0, np.int64), np.zeros(0, np.int64)
    device = D.device
    row = torch.from_numpy(row_np).to(device)
    col = torch.from_numpy(col_np).to(device)
    d = D[row, col]
    perm = _sort_positives(row, col, d)
    row, col, d = row[perm], col[perm], d[perm]
    rank = _entry_ranks(D, row, col, d, batch)
    rows_with = row_np[seg_start]  # rows stay grouped and ascending: segments unchanged
    first[rows_with] = rank[torch.from_numpy(seg_start).to(device)].cpu().numpy()
    self_col = (row + a) if search.remove_diag else torch.full_like(row, -1)
    is_self = col == self_col
    if search.remove_diag:
        ahead = torch.isnan(d) | ((d == torch.inf) & (self_col < col))
        rank = rank - ahead.to(torch.int64)
    R = torch.from_numpy(search.num_relevant[a:a + n]).to(device)[row]
    keep = ~is_self & (rank < R)
    return first, (row[keep] + a).cpu().numpy(), rank[keep].cpu().numpy()


def positive_ranks_torch(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                         remove_diag: bool, device: str | torch.device = "cuda",
                         chunk_bytes: int = DEVICE_CHUNK_BYTES,
                         progress: bool = True) -> PositiveRanks:
    """:func:`reproduce.evaluation.recall.positive_ranks` computed with torch on ``device``
    (any device, the CPU included, which is how the tests compare the two)."""
    search = prepare_search(Xq, Yq, Xdb, Ydb, remove_diag)
    device = torch.device(device)
    Nq, Ndb = search.Xq.shape[0], search.Xdb.shape[0]
    itemsize = search.Xq.dtype.itemsize
    step = rows_per_chunk(chunk_bytes, Ndb, itemsize)
    batch = rows_per_chunk(chunk_bytes // 4, Ndb, itemsize)
    first = np.empty(Nq, dtype=np.int64)
    queries, ranks = [], []
    steps = range(0, Nq, step)
    with torch.no_grad(), full_precision_matmul():
        q_all = torch.from_numpy(search.Xq).to(device)
        # one upload when the caller passed the same array as queries and database
        db_t = (q_all if search.Xq is search.Xdb else torch.from_numpy(search.Xdb).to(device)).T
        for a in tqdm(steps, desc="ranks", unit="chunk",
                      disable=not progress or len(steps) < 2):
            b = min(Nq, a + step)
            D = q_all[a:b] @ db_t
            D.mul_(-2)  # exact
            D.add_(2)  # 2 - 2 * S with one rounding, as MATLAB
            if remove_diag:
                idx = torch.arange(a, b, device=device)
                D[idx - a, idx] = torch.inf
            first[a:b], q, r = _chunk(D, search, a, batch)
            queries.append(q)
            ranks.append(r)
            del D
    query = np.concatenate(queries) if queries else np.zeros(0, np.int64)
    rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    ptr = np.concatenate(([0], np.cumsum(np.bincount(query, minlength=Nq)))).astype(np.int64)
    return PositiveRanks(first=first, num_relevant=search.num_relevant, top_ptr=ptr,
                         top_ranks=rank.astype(np.int64))
