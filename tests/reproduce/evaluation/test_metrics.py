"""MAP@R, R-precision and NMI: against pytorch-metric-learning where the definitions agree,
by hand where they differ (ties by index, the query's own entry, NaN distances)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reproduce.errors import InputError
from reproduce.evaluation import recall as recall_module
from reproduce.evaluation.metrics import nmi, retrieval_metrics
from reproduce.evaluation.recall import NO_POSITIVE, recall_at_k


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _pml(Xq, yq, Xdb=None, ydb=None, ref_includes_query=False) -> dict[str, float]:
    """pytorch-metric-learning's AccuracyCalculator with exact (torch) cosine kNN."""
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision",
                                       "precision_at_1"), k="max_bin_count",
                              device=torch.device("cpu"), knn_func=CustomKNN(CosineSimilarity()))
    if Xdb is None:
        return calc.get_accuracy(Xq, yq)
    return calc.get_accuracy(Xq, yq, Xdb, ydb, ref_includes_query=ref_includes_query)


def test_query_is_database_agrees_with_pytorch_metric_learning() -> None:
    pytest.importorskip("pytorch_metric_learning")
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(30), rng.integers(2, 7, size=30))  # every class >= 2 images
    X = _unit(rng, len(y), 12)
    # a weak class structure so that the metrics are far from 0 and 1
    X = X + 1.0 * _unit(rng, 30, 12)[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    res = retrieval_metrics(X, y, X, y, [1, 2, 4], remove_diag=True, chunk_bytes=4 * len(y) * 7,
                            progress=False)
    theirs = _pml(X, y)
    assert 0.1 < res.rank.map_at_r < 0.9
    assert res.rank.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], rel=1e-12)
    assert res.rank.mean_r_precision == pytest.approx(theirs["r_precision"], rel=1e-12)
    assert res.recall.recall[0] == pytest.approx(theirs["precision_at_1"], rel=1e-12)
    assert res.rank.num_without_positives == 0


def test_separate_query_set_with_lone_queries_agrees_with_pytorch_metric_learning() -> None:
    pytest.importorskip("pytorch_metric_learning")
    rng = np.random.default_rng(2)
    ydb = np.repeat(np.arange(20), 3)
    yq = np.concatenate([np.repeat(np.arange(20), 2), [50, 51, 52]])  # 3 labels not in db
    centres = _unit(rng, 60, 10)
    Xdb = _unit(rng, len(ydb), 10) + 0.7 * centres[ydb]
    Xq = _unit(rng, len(yq), 10) + 0.7 * centres[yq]
    Xdb /= np.linalg.norm(Xdb, axis=1, keepdims=True)
    Xq /= np.linalg.norm(Xq, axis=1, keepdims=True)
    # chunks of 3 queries: the last holds only lone queries
    res = retrieval_metrics(Xq, yq, Xdb, ydb, [1], remove_diag=False,
                            chunk_bytes=len(ydb) * 4 * 3, progress=False)
    theirs = _pml(Xq, yq, Xdb, ydb)
    assert res.rank.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], rel=1e-12)
    assert res.rank.mean_r_precision == pytest.approx(theirs["r_precision"], rel=1e-12)
    # both leave the 3 lone queries out of MAP@R; Recall@K, as MATLAB, counts them as misses
    assert res.rank.num_without_positives == 3
    assert np.isnan(res.rank.ap_at_r[-3:]).all()
    assert (res.positives.first[-3:] == NO_POSITIVE).all()
    assert res.recall.recall[0] * len(yq) == pytest.approx(theirs["precision_at_1"] * 40)


def test_ties_are_broken_by_database_index() -> None:
    # five identical database items, labels A B A B A; the query (label A) ties with all:
    # MATLAB's stable order ranks the A's at 0, 2, 4; R = 3, so 0 and 2 are within R
    Xdb = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (5, 1))
    ydb = np.array([1, 2, 1, 2, 1])
    res = retrieval_metrics(Xdb[:1], [1], Xdb, ydb, [1], remove_diag=False, progress=False)
    assert res.positives.top_ranks.tolist() == [0, 2]
    assert res.rank.map_at_r == pytest.approx((1 / 1 + 2 / 3) / 3, rel=1e-15)
    assert res.rank.mean_r_precision == pytest.approx(2 / 3, rel=1e-15)
    # label B: positives at ranks 1 and 3, R = 2: only rank 1 counts
    res_b = retrieval_metrics(Xdb[:1], [2], Xdb, ydb, [1], remove_diag=False, progress=False)
    assert res_b.positives.top_ranks.tolist() == [1]
    assert res_b.rank.map_at_r == pytest.approx((1 / 2) / 2, rel=1e-15)


def test_own_entry_excluded_duplicate_kept_and_no_positive_left_out() -> None:
    X = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    y = np.array([1, 1, 1, 2])
    res = retrieval_metrics(X, y, X, y, [1], remove_diag=True, progress=False)
    # q0: candidates 1 (d 0), 3 (d 0.8), 2 (d 2); positives 1, 2 at ranks 0, 2; R = 2
    # q1: the same; q2: 3 (0.4), 0 (2), 1 (2): positives at 1, 2; q3: label 2 alone
    assert res.positives.num_relevant.tolist() == [2, 2, 2, 0]
    assert res.rank.ap_at_r[:3].tolist() == [0.5, 0.5, 0.25]
    assert res.rank.r_precision[:3].tolist() == [0.5, 0.5, 0.5]
    assert math.isnan(res.rank.ap_at_r[3]) and res.rank.num_without_positives == 1
    assert res.rank.map_at_r == pytest.approx(5 / 12, rel=1e-15)
    assert res.rank.mean_r_precision == 0.5
    # Recall@K is untouched by the new pass: q3 reaches its own Inf entry only at K = 4
    assert res.recall.recallrate.tolist() == recall_at_k(X, y, X, y, [1], progress=False
                                                         ).recallrate.tolist()


def test_nan_distances_rank_last_and_own_entry_never_counts() -> None:
    X = np.array([[1, 0], [np.nan, np.nan], [0, 1]], dtype=np.float32)
    y = np.array([1, 1, 1])
    with np.errstate(invalid="ignore"):
        res = retrieval_metrics(X, y, X, y, [1], remove_diag=True, progress=False)
    # q0: d = [Inf, NaN, 2]: without its own entry, 2 then 1 (NaN last): ranks 0, 1 of R = 2;
    # with its own Inf entry ahead of the NaN, item 1 would be at rank 2 and fall outside R
    assert res.positives.top_ranks[res.positives.top_ptr[0]:res.positives.top_ptr[1]
                                    ].tolist() == [0, 1]
    assert res.rank.ap_at_r.tolist() == [1.0, 1.0, 1.0]


def _literal(Xq, yq, Xdb, ydb, remove_diag) -> tuple[np.ndarray, np.ndarray]:
    """AP@R and R-precision per query from a full stable sort of each row, own entry dropped."""
    D = 2 - 2 * (Xq @ Xdb.T)
    ap = np.full(len(Xq), np.nan)
    rp = np.full(len(Xq), np.nan)
    for i in range(len(Xq)):
        keep = np.arange(len(Xdb)) != (i if remove_diag else -1)
        cand = np.nonzero(keep)[0]
        ranked = cand[np.argsort(D[i, cand], kind="stable")]
        rel = ydb[ranked] == yq[i]
        R = int(rel.sum())
        if R == 0:
            continue
        hits = rel[:R]
        precision = np.cumsum(hits) / np.arange(1, R + 1)
        ap[i] = float(np.sum(precision * hits)) / R
        rp[i] = hits.sum() / R
    return ap, rp


@pytest.mark.parametrize("cap", [512, 0], ids=["sorted-candidates", "one-by-one"])
@pytest.mark.parametrize("remove_diag", [True, False])
def test_matches_a_literal_sort_with_ties_and_small_chunks(remove_diag: bool, cap: int,
                                                           monkeypatch) -> None:
    # cap 0: every row takes the positive-by-positive branch instead of sorting candidates
    monkeypatch.setattr(recall_module, "CANDIDATES_CAP", cap)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 25, size=160)
    X = _unit(rng, 160, 6) + 0.8 * _unit(rng, 25, 6)[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[10] = X[20]  # exact duplicates create ties
    X[30] = X[20]
    X[40] = X[41]
    y[[10, 20, 30]] = 7
    ap, rp = _literal(X, y, X, y, remove_diag)
    res = retrieval_metrics(X, y, X, y, [1, 5], remove_diag=remove_diag,
                            chunk_bytes=160 * 4 * 9, progress=False)
    np.testing.assert_allclose(res.rank.ap_at_r, ap, rtol=1e-14, equal_nan=True)
    np.testing.assert_array_equal(res.rank.r_precision, rp)
    assert len(res.positives.top_ranks) > 100  # many positives within R: both branches work


def test_nmi_by_hand_on_two_tight_groups() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    X = np.concatenate([np.zeros((4, 3)), np.full((4, 3), 10.0)]) + 0.01 * rng.random((8, 3))
    # the clusters can only be the two groups; labels 0 0 0 1 | 1 1 1 0
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    res = nmi(X, labels)
    assert sorted(np.bincount(res.clusters).tolist()) == [4, 4]
    assert len(set(res.clusters[:4])) == 1 and len(set(res.clusters[4:])) == 1
    # contingency [[3, 1], [1, 3]] of 8 points, both entropies ln 2:
    # MI = 3/4 ln(3/2) + 1/4 ln(1/2), NMI = MI / ln 2
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / math.log(2)
    assert res.nmi == pytest.approx(expected, rel=1e-12)
    assert res.record["seed"] == 0 and res.record["k"] == 2 and res.record["points"] == 8
    # label names do not matter; a perfect split is 1
    assert nmi(X, np.array([5, 5, 5, 5, 9, 9, 9, 9])).nmi == pytest.approx(1.0, rel=1e-12)


def test_nmi_is_deterministic_for_a_seed() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    X = _unit(rng, 300, 8)
    labels = rng.integers(0, 30, size=300)
    a, b = nmi(X, labels), nmi(X, labels)
    assert np.array_equal(a.clusters, b.clusters) and a.nmi == b.nmi
    with pytest.raises(InputError, match="NMI needs"):
        nmi(X, labels[:10])
