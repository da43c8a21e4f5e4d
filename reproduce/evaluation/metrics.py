"""The field's retrieval metrics beside Recall@K: MAP@R, R-precision and NMI.

MAP@R and R-precision (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", 2020)
come from the same chunked pass over the distances as Recall@K
(:func:`reproduce.evaluation.recall.positive_ranks`), with the same order: distance
``2 - 2 Xq Xdb'`` ascending, equal distances by database index, NaN last. For a query with
R positives (database items with its label, its own entry excluded) whose positives within
the first R candidates sit at 0-based ranks ``r_1 < r_2 < ...``:

- ``R-precision = |{j : r_j < R}| / R``;
- ``AP@R = (1 / R) * sum_j j / (r_j + 1)`` over those positives (precision at each of them,
  averaged over R, so a positive missing from the first R adds 0).

Handling of the awkward cases (also in ``docs/metrics.md``):

- the query's own entry (same index, under ``removeDiag``) is neither a candidate nor a
  positive for these two metrics, so R excludes it; a duplicate image stays both;
- a query with no positive (R = 0) has no defined value: it is left out of the mean, as
  pytorch-metric-learning's ``AccuracyCalculator`` leaves out its "lone" queries, and the
  number left out is reported (``num_without_positives``). Recall@K, as MATLAB, counts such a
  query as a miss instead.

NMI: k-means on the embeddings with k = the number of distinct labels, then
``sklearn.metrics.normalized_mutual_info_score`` (arithmetic-mean normalisation) between
labels and clusters. The clustering is faiss's ``Kmeans`` (the library
pytorch-metric-learning's ``AccuracyCalculator`` uses for its NMI, with its 20 iterations),
seeded, on every point (no subsampling). We chose it over scikit-learn's ``KMeans``, whose
k-means++ initialisation alone costs O(k n d log k): on the 2-core development machine
scikit-learn took 255 s at n = 12,000, k = 2,244 (a fifth of SOP's n and k; the cost grows
with n x k), faiss 22 s at the full SOP size (n = 60,502, k = 11,316). faiss also has a GPU
build.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.recall import (
    DEFAULT_CHUNK_BYTES,
    PositiveRanks,
    RecallResult,
    check_ks,
    positive_ranks,
    recall_from_ranks,
)

log = logging.getLogger(__name__)

NMI_SEED = 0
"""Seed of the k-means clustering behind NMI (recorded with every NMI value)."""

NMI_ITERATIONS = 20
"""Lloyd iterations of the k-means behind NMI (pytorch-metric-learning's choice)."""


@dataclass
class RankMetrics:
    """MAP@R and R-precision, per query and averaged over the queries that have positives.

    ``ap_at_r`` and ``r_precision`` are NaN for queries without positives; ``map_at_r`` and
    ``mean_r_precision`` are NaN when no query has one.
    """

    ap_at_r: np.ndarray
    r_precision: np.ndarray
    map_at_r: float
    mean_r_precision: float
    num_without_positives: int

    def as_dict(self) -> dict[str, float]:
        """``{"MAP@R": ..., "R-precision": ...}`` (fractions) for tables."""
        return {"MAP@R": self.map_at_r, "R-precision": self.mean_r_precision}


def rank_metrics(ranks: PositiveRanks) -> RankMetrics:
    """MAP@R and R-precision from a pass's top-R positive ranks (see the module docstring)."""
    R = ranks.num_relevant.astype(np.int64)
    n = len(R)
    lengths = np.diff(ranks.top_ptr)
    query = np.repeat(np.arange(n), lengths)
    # j: 1-based position of each listed positive among its query's positives
    j = np.arange(len(ranks.top_ranks)) - np.repeat(ranks.top_ptr[:-1], lengths) + 1
    precision = j / (ranks.top_ranks + 1.0)
    summed = np.bincount(query, weights=precision, minlength=n)
    has = R > 0
    ap = np.full(n, np.nan)
    rp = np.full(n, np.nan)
    ap[has] = summed[has] / R[has]
    rp[has] = lengths[has] / R[has]
    missing = int(n - np.count_nonzero(has))
    if missing:
        log.info("MAP@R / R-precision: %d of %d queries have no positive and are left out",
                 missing, n)
    mean_ap = float(np.mean(ap[has])) if has.any() else float("nan")
    mean_rp = float(np.mean(rp[has])) if has.any() else float("nan")
    return RankMetrics(ap_at_r=ap, r_precision=rp, map_at_r=mean_ap, mean_r_precision=mean_rp,
                       num_without_positives=missing)


@dataclass
class NMIResult:
    """NMI between labels and a seeded k-means clustering, with how it was computed."""

    nmi: float
    clusters: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


def _library_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def nmi_available() -> str | None:
    """None when NMI can be computed, else why not (a missing library)."""
    missing = [name for name, module in (("faiss-cpu or faiss-gpu", "faiss"),
                                         ("scikit-learn", "sklearn"))
               if not _importable(module)]
    return f"needs {' and '.join(missing)} (not installed)" if missing else None


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _faiss_threads() -> int | None:
    """faiss's OpenMP thread count (part of what makes a clustering run repeatable)."""
    import faiss

    return int(faiss.omp_get_max_threads()) if hasattr(faiss, "omp_get_max_threads") else None


def faiss_gpus() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def kmeans_clusters(X: np.ndarray, k: int, seed: int = NMI_SEED,
                    iterations: int = NMI_ITERATIONS, gpu: bool = False) -> np.ndarray:
    """Cluster index per row of ``X`` from faiss ``Kmeans`` (seeded, every point used)."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    kmeans = faiss.Kmeans(X.shape[1], k, niter=iterations, seed=seed, gpu=gpu, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(1, len(X)))
    kmeans.train(X)
    _, assignment = kmeans.index.search(X, 1)
    return assignment[:, 0].astype(np.int64)


def nmi(X: np.ndarray, labels: np.ndarray, seed: int = NMI_SEED,
        iterations: int = NMI_ITERATIONS, gpu: bool = False) -> NMIResult:
    """NMI of ``labels`` against k-means on ``X`` with k = the number of distinct labels."""
    from sklearn.metrics import normalized_mutual_info_score

    X = np.asarray(X)
    labels = np.asarray(labels).ravel()
    if X.ndim != 2 or len(X) != len(labels):
        raise InputError(f"NMI needs N x d features and N labels, got {X.shape} and "
                         f"{labels.shape}")
    k = len(np.unique(labels))
    if k > len(X):
        raise InputError(f"NMI: {k} classes but only {len(X)} points")
    clusters = (np.zeros(len(X), dtype=np.int64) if k == 1
                else kmeans_clusters(X, k, seed, iterations, gpu))
    value = float(normalized_mutual_info_score(labels, clusters,
                                               average_method="arithmetic"))
    record = {"clustering": "faiss.Kmeans", "k": k, "points": len(X), "seed": seed,
              "iterations": iterations, "gpu": gpu, "faiss": _library_version("faiss-cpu")
              or _library_version("faiss-gpu"),
              "scikit-learn": _library_version("scikit-learn"),
              "normalisation": "arithmetic", "threads": _faiss_threads()}
    return NMIResult(nmi=value, clusters=clusters, record=record)


@dataclass
class RetrievalResult:
    """Recall@K, MAP@R and R-precision of one search, from one pass over its distances."""

    recall: RecallResult
    rank: RankMetrics
    positives: PositiveRanks

    def as_dict(self) -> dict[str, float]:
        """Every mean metric by name (fractions)."""
        return {**self.recall.as_dict(), **self.rank.as_dict()}


def retrieval_metrics(Xq: np.ndarray, Yq: np.ndarray, Xdb: np.ndarray, Ydb: np.ndarray,
                      Ks: Sequence[int], remove_diag: bool = True,
                      chunk_bytes: int | None = None, progress: bool = True,
                      device: str = "cpu") -> RetrievalResult:
    """Recall@K (``evaluate_recall``'s semantics), MAP@R and R-precision in one pass.

    ``device="cpu"`` runs the numpy pass of :mod:`reproduce.evaluation.recall`; any other
    torch device (``"cuda"``, ``"cuda:1"``) the chunked torch pass of
    :mod:`reproduce.evaluation.ranks_torch`, which gives the same ranks.
    """
    Ks_given = check_ks(Ks, np.asarray(Xdb).shape[0])
    if device == "cpu":
        positives = positive_ranks(Xq, Yq, Xdb, Ydb, remove_diag,
                                   chunk_bytes or DEFAULT_CHUNK_BYTES, progress)
    else:
        from reproduce.evaluation.ranks_torch import DEVICE_CHUNK_BYTES, positive_ranks_torch

        positives = positive_ranks_torch(Xq, Yq, Xdb, Ydb, remove_diag, device,
                                         chunk_bytes or DEVICE_CHUNK_BYTES, progress)
    return RetrievalResult(recall=recall_from_ranks(positives.first, Ks_given),
                           rank=rank_metrics(positives), positives=positives)
