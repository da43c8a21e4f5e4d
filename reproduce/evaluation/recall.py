"""Recall@K exactly as the authors' ``evaluate_model.m`` (local function ``evaluate_recall``).

MATLAB semantics reproduced here:

- distances ``2 - 2 * Xq * Xdb'`` in the class of the features (single for real embeddings;
  a single/double mix is single, as in MATLAB);
- with ``removeDiag`` the query's own entry (same index) is set to ``Inf``: the query is
  excluded by index, not by dropping the first neighbour (a duplicate image stays a candidate);
- ``mink(row, max(K))`` returns the smallest distances in ascending order with equal values in
  index order (MATLAB's stable sort), ``NaN`` after ``Inf``;
- a query is a hit at K when any of its first K neighbours has its label (label column 1);
  a query with no same-label item anywhere is a miss (it is not dropped);
- ``fprintf('K: %4d, Recall: %.3f\\n', opts.Ks(j), mean(recallrate(:, j)))``.

Instead of sorting each row we find, per query, the *first positive* in that order (the
same-label database item with the smallest distance, lowest index among equals) and count
the items ranked ahead of it: those with a smaller distance plus those with an equal distance
and a lower index. With that rank ``r`` the query is a hit at K exactly when ``r < K``, which
gives Recall@K for every K at once. The distance matrix is produced in chunks of query rows,
so memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from reproduce.errors import InputError

log = logging.getLogger(__name__)

NO_POSITIVE = np.iinfo(np.int64).max
"""Rank given to a query that has no same-label item in the database (a miss at every K)."""

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Bytes of distance matrix held at once (one chunk of query rows)."""


@dataclass
class RecallResult:
    """Per-query and mean Recall@K, in the layout of ``evaluate_recall``.

    ``Ks`` are sorted ascending (MATLAB sorts them); ``recallrate`` is Nq x m of 0/1 (float64,
    like MATLAB's ``zeros``); ``recall`` the column means; ``rank`` the number of database
    items ranked ahead of each query's first positive (``NO_POSITIVE`` if it has none);
    ``printed`` the lines MATLAB prints.
    """

    Ks: tuple[int, ...]
    recallrate: np.ndarray
    recall: np.ndarray
    rank: np.ndarray
    printed: str

    def as_dict(self) -> dict[str, float]:
        """``{"R@1": 0.695, ...}`` for tables."""
        return {f"R@{k}": float(v) for k, v in zip(self.Ks, self.recall, strict=True)}


def format_recall_lines(Ks_printed: Sequence[int], recall: Sequence[float]) -> str:
    """The lines ``evaluate_recall`` prints: ``K: %4d, Recall: %.3f`` joined by newlines."""
    return "\n".join(f"K: {int(k):4d}, Recall: {float(r):.3f}"
                     for k, r in zip(Ks_printed, recall, strict=True))


def _label_column(Y: np.ndarray, name: str) -> np.ndarray:
    """Column 1 of a label matrix (or a label vector), as MATLAB's ``Y(:, 1)``."""
    Y = np.asarray(Y)
    if Y.ndim == 2:
        return Y[:, 0]
    if Y.ndim == 1:
        return Y
    raise InputError(f"{name}: labels must be a vector or an N x k matrix, got shape {Y.shape}")


def _feature_dtype(Xq: np.ndarray, Xdb: np.ndarray) -> np.dtype:
    """MATLAB's class for ``Xq * Xdb'``: single if either operand is single, else double."""
    if Xq.dtype == np.float32 or Xdb.dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _positive_groups(Yq: np.ndarray, Ydb: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """For each query: where its label's database indices start in ``order`` and how many.

    Returns ``(order, start, count)``: ``order`` holds database indices grouped by label,
    ascending within a group; query ``i``'s same-label items are
    ``order[start[i]:start[i] + count[i]]`` (``count`` 0 when none).
    """
    order = np.argsort(Ydb, kind="stable")
    sorted_labels = Ydb[order]
    left = np.searchsorted(sorted_labels, Yq, side="left")
    right = np.searchsorted(sorted_labels, Yq, side="right")
    count = right - left
    # NaN labels never compare equal in MATLAB: no positives.
    if np.issubdtype(Yq.dtype, np.floating):
        count[np.isnan(Yq)] = 0
    return order, left, count


def _first_positive(D: np.ndarray, rows_offset: int, order: np.ndarray, start: np.ndarray,
                    count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance and database index of each query's first positive in MATLAB's sort order.

    ``D`` is the chunk's distance matrix; the chunk's queries are ``rows_offset + arange``.
    Rows without positives get distance NaN and index ``-1``.
    """
    n = D.shape[0]
    c = count[rows_offset:rows_offset + n]
    s = start[rows_offset:rows_offset + n]
    d_first = np.full(n, np.nan, dtype=D.dtype)
    j_first = np.full(n, -1, dtype=np.int64)
    has = c > 0
    if not has.any():
        return d_first, j_first
    rows = np.nonzero(has)[0]
    cnt = c[has]
    total = int(cnt.sum())
    row_rep = np.repeat(rows, cnt)
    seg_start = np.concatenate(([0], np.cumsum(cnt)[:-1]))
    within = np.arange(total) - np.repeat(seg_start, cnt)
    cols = order[np.repeat(s[has], cnt) + within]
    d_pos = D[row_rep, cols]
    nan = np.isnan(d_pos)
    # smallest non-NaN distance per row (NaN sorts last: only all-NaN rows get NaN)
    d_min = np.fmin.reduceat(d_pos, seg_start)
    d_min_rep = np.repeat(d_min, cnt)
    at_min = (d_pos == d_min_rep) | (np.isnan(d_min_rep) & nan)
    big = np.iinfo(np.int64).max
    j_min = np.minimum.reduceat(np.where(at_min, cols, big), seg_start)
    d_first[rows] = d_min
    j_first[rows] = j_min
    return d_first, j_first


def _ranks_in_chunk(D: np.ndarray, d_first: np.ndarray, j_first: np.ndarray) -> np.ndarray:
    """Items ranked ahead of each row's first positive (stable ascending order, NaN last).

    Row by row: the row (a few hundred KB) stays in cache for its two comparisons, which
    makes this far cheaper than whole-chunk boolean reductions.
    """
    n = D.shape[0]
    ranks = np.full(n, NO_POSITIVE, dtype=np.int64)
    for r in np.nonzero(j_first >= 0)[0]:
        row = D[r]
        t = d_first[r]
        j = int(j_first[r])
        if np.isnan(t):  # every non-NaN item, then the NaNs with a lower index
            ranks[r] = int(np.count_nonzero(~np.isnan(row))) + int(
                np.count_nonzero(np.isnan(row[:j])))
            continue
        less = int(np.count_nonzero(row < t))
        if int(np.count_nonzero(row <= t)) - less > 1:  # other items tie with the positive
            less += int(np.count_nonzero(row[:j] == t))
        ranks[r] = less
    return ranks


def first_positive_ranks(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                         remove_diag: bool, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         progress: bool = True) -> np.ndarray:
    """Per query, how many database items MATLAB's ``mink`` would rank ahead of its first
    same-label item (``NO_POSITIVE`` when there is none). Distances ``2 - 2 Xq Xdb'``."""
    Xq = np.asarray(Xq)
    Xdb = np.asarray(Xdb)
    if Xq.ndim != 2 or Xdb.ndim != 2 or Xq.shape[1] != Xdb.shape[1]:
        raise InputError(f"features must be Nq x d and Ndb x d with the same d, got "
                         f"{Xq.shape} and {Xdb.shape}")
    yq = _label_column(Yq, "Yq")
    ydb = _label_column(Ydb, "Ydb")
    if len(yq) != Xq.shape[0] or len(ydb) != Xdb.shape[0]:
        raise InputError(f"labels do not match features: {len(yq)} query labels for "
                         f"{Xq.shape[0]} queries, {len(ydb)} database labels for "
                         f"{Xdb.shape[0]} items")
    if remove_diag and Xq.shape[0] > Xdb.shape[0]:
        raise InputError(f"removeDiag needs query = database, got {Xq.shape[0]} queries and "
                         f"{Xdb.shape[0]} database items")
    dtype = _feature_dtype(Xq, Xdb)
    q_all = np.ascontiguousarray(Xq, dtype=dtype)
    db_t = np.ascontiguousarray(Xdb, dtype=dtype).T
    order, start, count = _positive_groups(yq, ydb)
    Nq, Ndb = Xq.shape[0], Xdb.shape[0]
    rows_per_chunk = max(1, int(chunk_bytes // max(1, Ndb * dtype.itemsize)))
    ranks = np.empty(Nq, dtype=np.int64)
    steps = range(0, Nq, rows_per_chunk)
    for a in tqdm(steps, desc="Recall@K", unit="chunk", disable=not progress or len(steps) < 2):
        b = min(Nq, a + rows_per_chunk)
        D = q_all[a:b] @ db_t  # Xq * Xdb' (BLAS gemm in the features' precision)
        D *= -2  # exact
        D += 2  # 2 - 2 * S with one rounding, as MATLAB
        if remove_diag:
            idx = np.arange(a, b)
            D[idx - a, idx] = np.inf
        d_first, j_first = _first_positive(D, a, order, start, count)
        ranks[a:b] = _ranks_in_chunk(D, d_first, j_first)
    return ranks


def recall_at_k(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                Ks: Sequence[int], remove_diag: bool = True,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True) -> RecallResult:
    """``evaluate_recall(Xq, Yq, Xdb, Ydb, opts, removeDiag)`` with per-query results.

    Rows of ``Xq``/``Xdb`` are samples. ``removeDiag`` defaults to true as in MATLAB.
    MATLAB fails when ``max(Ks)`` exceeds the database size (``ind(1:K)`` out of range);
    we raise an ``InputError`` instead.
    """
    Ks_given = [int(k) for k in np.asarray(Ks).ravel()]
    if not Ks_given or min(Ks_given) < 1:
        raise InputError(f"Ks must be positive integers, got {Ks_given}")
    Ndb = np.asarray(Xdb).shape[0]
    if max(Ks_given) > Ndb:
        raise InputError(f"K = {max(Ks_given)} exceeds the database size {Ndb}")
    ranks = first_positive_ranks(Xq, Yq, Xdb, Ydb, remove_diag, chunk_bytes, progress)
    Ks_sorted = sorted(Ks_given)
    recallrate = (ranks[:, None] < np.asarray(Ks_sorted)[None, :]).astype(np.float64)
    # the hit counts are integers, so sum / N is MATLAB's mean to the last bit
    recall = recallrate.sum(axis=0) / recallrate.shape[0]
    if Ks_sorted != Ks_given:
        log.warning("Ks %s are not ascending: evaluate_model.m sorts them for the recall but "
                    "prints opts.Ks in the given order; the printed lines mirror that", Ks_given)
    printed = format_recall_lines(Ks_given, recall)
    return RecallResult(Ks=tuple(Ks_sorted), recallrate=recallrate, recall=recall, rank=ranks,
                        printed=printed)
