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

The same pass (:func:`positive_ranks`) also ranks, in the same order and from the same
chunks, each query's further positives for as long as they fall within the first R
candidates (R = its number of positives without its own entry), which is all MAP@R and
R-precision need (:mod:`reproduce.evaluation.metrics`). A row whose first positive is
already beyond R costs nothing more; otherwise one comparison of the cache-resident row
picks the candidates no farther than its R-th positive and, when they are few, a stable sort
of those ranks all its positives at once (else they are ranked one by one, stopping at the
first beyond R). At SOP size this adds about 7 % to the Recall@K pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass
class PositiveRanks:
    """What one pass over the distances keeps of each query's positives (same-label items).

    - ``first``: items MATLAB's ``mink`` ranks ahead of the query's first positive, the
      query's own entry (``Inf`` under ``removeDiag``) counted as a candidate and, when it has
      the query's label, as a positive, exactly as ``evaluate_recall`` does
      (``NO_POSITIVE`` when the label is absent from the database);
    - ``num_relevant``: R, the query's positives other than its own entry;
    - ``top_ptr``/``top_ranks``: query ``i``'s positives that rank within the first R, as
      0-based ranks in ascending order, ``top_ranks[top_ptr[i]:top_ptr[i + 1]]``; here the
      query's own entry is neither a candidate nor a positive (it is left out of the list
      before ranking). Empty for every query when the pass was asked for ``first`` only.
    """

    first: np.ndarray
    num_relevant: np.ndarray
    top_ptr: np.ndarray
    top_ranks: np.ndarray


@dataclass
class SearchInputs:
    """Checked features and labels for one search: the MATLAB-class features and the
    database grouped by label (see :func:`positive_groups`)."""

    Xq: np.ndarray
    Xdb: np.ndarray
    yq: np.ndarray
    ydb: np.ndarray
    remove_diag: bool
    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    self_positive: np.ndarray
    """Per query: whether its own entry (same index, under ``removeDiag``) has its label."""

    @property
    def num_relevant(self) -> np.ndarray:
        """R per query: database items with its label, its own entry excluded."""
        return self.count - self.self_positive


def positive_groups(Yq: np.ndarray, Ydb: np.ndarray) -> tuple[np.ndarray, np.ndarray,
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


def prepare_search(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                   remove_diag: bool) -> SearchInputs:
    """Check shapes (``InputError`` naming what disagrees) and group the database by label."""
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
    order, start, count = positive_groups(yq, ydb)
    if remove_diag:
        own = ydb[:len(yq)]
        self_positive = ((own == yq) & (count > 0)).astype(np.int64)
    else:
        self_positive = np.zeros(len(yq), dtype=np.int64)
    return SearchInputs(Xq=np.ascontiguousarray(Xq, dtype=dtype),
                        Xdb=np.ascontiguousarray(Xdb, dtype=dtype), yq=yq, ydb=ydb,
                        remove_diag=remove_diag, order=order, start=start, count=count,
                        self_positive=self_positive)


def chunk_positives(search: SearchInputs, a: int, b: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """The positives of queries ``a:b`` as flat arrays ``(row, col, seg_start)``.

    ``row`` is the query's row in the chunk, ``col`` the database index; entries are grouped
    by row (rows ascending), columns ascending within a row; ``seg_start`` is where each row
    with positives begins. Rows without positives have no entry.
    """
    c = search.count[a:b]
    s = search.start[a:b]
    rows = np.nonzero(c > 0)[0]
    if not len(rows):
        return _EMPTY, _EMPTY, _EMPTY
    cnt = c[rows]
    total = int(cnt.sum())
    seg_start = np.concatenate(([0], np.cumsum(cnt)[:-1])).astype(np.int64)
    within = np.arange(total) - np.repeat(seg_start, cnt)
    cols = search.order[np.repeat(s[rows], cnt) + within]
    return np.repeat(rows, cnt), cols, seg_start


def sort_positives(row: np.ndarray, col: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Permutation putting each row's positives in MATLAB's sort order (distance ascending,
    NaN last, equal distances by index), rows kept grouped."""
    nan = np.isnan(d)
    return np.lexsort((col, np.where(nan, 0, d), nan, row))


def _rank(row: np.ndarray, t: float, j: int) -> int:
    """Items ahead of item ``j`` (distance ``t``) in ``row``'s stable ascending order, NaN last.

    Row by row: the row (a few hundred KB) stays in cache for its two comparisons, which
    makes this far cheaper than whole-chunk boolean reductions.
    """
    if np.isnan(t):  # every non-NaN item, then the NaNs with a lower index
        return int(np.count_nonzero(~np.isnan(row))) + int(np.count_nonzero(np.isnan(row[:j])))
    less = int(np.count_nonzero(row < t))
    if int(np.count_nonzero(row <= t)) - less > 1:  # other items tie with it
        less += int(np.count_nonzero(row[:j] == t))
    return less


def _self_ahead(t: float, j: int, self_col: int) -> bool:
    """Whether the query's own entry (distance ``Inf``, index ``self_col``) ranks ahead of a
    positive at distance ``t`` and index ``j``."""
    return bool(np.isnan(t) or (t == np.inf and self_col < j))


CANDIDATES_CAP = 512
"""Most candidates :func:`_top_ranks` sorts for one query before it ranks positive by
positive instead."""


def _ranks_one_by_one(line: np.ndarray, col: np.ndarray, d: np.ndarray, self_col: int,
                      R: int, first_rank: int) -> np.ndarray:
    """Ranks (own entry left out) of a row's positives, in order, while they stay below R;
    ``col``/``d`` are the row's sorted positives, ``first_rank`` the rank of the first."""
    found = []
    for e in range(len(col)):
        j = int(col[e])
        if j == self_col:
            continue
        t = d[e]
        rank = first_rank if e == 0 else _rank(line, t, j)
        if self_col >= 0 and _self_ahead(t, j, self_col):
            rank -= 1
        if rank >= R:
            break
        found.append(rank)
    return np.asarray(found, dtype=np.int64) if found else _EMPTY


def _top_ranks(line: np.ndarray, label: Any, ydb: np.ndarray, col: np.ndarray, d: np.ndarray,
               self_col: int, R: int, first_rank: int) -> np.ndarray:
    """Ranks (own entry left out) of a row's positives that fall within the first R.

    Every such positive is at most as far as the R-th positive other than the own entry
    (distance ``T``), and so is every item ranked ahead of it: when few items are within
    ``T`` they are sorted (stable, so ties stay in index order) and the positives read off
    the sorted labels, in two passes over the row whatever the number of positives. When
    many are (a poor ranking) or ``T`` is not finite, positives are ranked one by one and
    the loop stops at the first beyond R.
    """
    if col[0] != self_col:
        r0 = first_rank - int(self_col >= 0 and _self_ahead(d[0], int(col[0]), self_col))
        if r0 >= R:  # the nearest positive is already beyond R
            return _EMPTY
    T = d[col != self_col][R - 1]
    if np.isfinite(T):
        within = line <= T
        if int(np.count_nonzero(within)) <= CANDIDATES_CAP:
            idx = np.flatnonzero(within)
            ranked = idx[np.argsort(line[idx], kind="stable")]
            ranks = np.flatnonzero(ydb[ranked] == label)  # T < Inf: the own entry is not in
            return ranks[ranks < R]
    return _ranks_one_by_one(line, col, d, self_col, R, first_rank)


def _chunk_ranks(D: np.ndarray, search: SearchInputs, a: int, top: bool
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """First-positive ranks of the chunk's queries and, with ``top``, each query's list of
    top-R positive ranks (own entry left out), from the chunk's distances ``D``."""
    n = D.shape[0]
    first = np.full(n, NO_POSITIVE, dtype=np.int64)
    tops: list[np.ndarray] = [_EMPTY] * n
    row, col, seg_start = chunk_positives(search, a, a + n)
    if not len(row):
        return first, tops
    d = D[row, col]
    perm = sort_positives(row, col, d)
    col, d = col[perm], d[perm]
    seg_end = np.append(seg_start[1:], len(col))
    rows = row[seg_start]
    R_all = search.num_relevant[a:a + n]
    for r, lo, hi in zip(rows.tolist(), seg_start.tolist(), seg_end.tolist(), strict=True):
        line = D[r]
        first_rank = _rank(line, d[lo], int(col[lo]))
        first[r] = first_rank
        R = int(R_all[r])
        if top and R > 0:
            tops[r] = _top_ranks(line, search.yq[a + r], search.ydb, col[lo:hi], d[lo:hi],
                                 a + r if search.remove_diag else -1, R, first_rank)
    return first, tops


_EMPTY = np.zeros(0, dtype=np.int64)


def pack_tops(tops: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query rank lists -> ``(top_ptr, top_ranks)`` (CSR layout)."""
    lengths = np.fromiter((len(t) for t in tops), dtype=np.int64, count=n)
    ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    ranks = np.concatenate(tops) if n else _EMPTY
    return ptr, ranks.astype(np.int64, copy=False)


def rows_per_chunk(chunk_bytes: int, Ndb: int, itemsize: int) -> int:
    """Query rows whose distance rows fit in ``chunk_bytes`` (at least one)."""
    return max(1, int(chunk_bytes // max(1, Ndb * itemsize)))


def positive_ranks(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                   remove_diag: bool, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                   progress: bool = True, top: bool = True) -> PositiveRanks:
    """One chunked pass over ``2 - 2 Xq Xdb'``: every query's first-positive rank (Recall@K)
    and, with ``top``, the ranks of its positives within the first R (MAP@R, R-precision)."""
    search = prepare_search(Xq, Yq, Xdb, Ydb, remove_diag)
    db_t = search.Xdb.T
    Nq, Ndb = search.Xq.shape[0], search.Xdb.shape[0]
    step = rows_per_chunk(chunk_bytes, Ndb, search.Xq.dtype.itemsize)
    first = np.empty(Nq, dtype=np.int64)
    tops: list[np.ndarray] = []
    steps = range(0, Nq, step)
    for a in tqdm(steps, desc="ranks", unit="chunk", disable=not progress or len(steps) < 2):
        b = min(Nq, a + step)
        D = search.Xq[a:b] @ db_t  # Xq * Xdb' (BLAS gemm in the features' precision)
        D *= -2  # exact
        D += 2  # 2 - 2 * S with one rounding, as MATLAB
        if remove_diag:
            idx = np.arange(a, b)
            D[idx - a, idx] = np.inf
        first[a:b], chunk_tops = _chunk_ranks(D, search, a, top)
        tops += chunk_tops
    ptr, ranks = pack_tops(tops, Nq)
    return PositiveRanks(first=first, num_relevant=search.num_relevant, top_ptr=ptr,
                         top_ranks=ranks)


def first_positive_ranks(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                         remove_diag: bool, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         progress: bool = True) -> np.ndarray:
    """Per query, how many database items MATLAB's ``mink`` would rank ahead of its first
    same-label item (``NO_POSITIVE`` when there is none). Distances ``2 - 2 Xq Xdb'``."""
    return positive_ranks(Xq, Yq, Xdb, Ydb, remove_diag, chunk_bytes, progress, top=False).first


def check_ks(Ks: Sequence[int], Ndb: int) -> list[int]:
    """The Ks as given, checked: positive and at most the database size (MATLAB fails with
    an index error beyond it; we raise an ``InputError``)."""
    Ks_given = [int(k) for k in np.asarray(Ks).ravel()]
    if not Ks_given or min(Ks_given) < 1:
        raise InputError(f"Ks must be positive integers, got {Ks_given}")
    if max(Ks_given) > Ndb:
        raise InputError(f"K = {max(Ks_given)} exceeds the database size {Ndb}")
    return Ks_given


def recall_from_ranks(ranks: np.ndarray, Ks_given: Sequence[int]) -> RecallResult:
    """``evaluate_recall``'s outputs from the first-positive ranks (every K at once)."""
    Ks_given = list(Ks_given)
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


def recall_at_k(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                Ks: Sequence[int], remove_diag: bool = True,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True) -> RecallResult:
    """``evaluate_recall(Xq, Yq, Xdb, Ydb, opts, removeDiag)`` with per-query results.

    Rows of ``Xq``/``Xdb`` are samples. ``removeDiag`` defaults to true as in MATLAB.
    MATLAB fails when ``max(Ks)`` exceeds the database size (``ind(1:K)`` out of range);
    we raise an ``InputError`` instead.
    """
    Ks_given = check_ks(Ks, np.asarray(Xdb).shape[0])
    ranks = first_positive_ranks(Xq, Yq, Xdb, Ydb, remove_diag, chunk_bytes, progress)
    return recall_from_ranks(ranks, Ks_given)
