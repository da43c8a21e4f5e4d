"""Recall@K against saved MATLAB results and hand-worked cases (evaluate_model.m semantics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reproduce import paths
from reproduce.errors import InputError
from reproduce.evaluation.recall import NO_POSITIVE, format_recall_lines, recall_at_k
from reproduce.parity.recall import check_recall_fixture, is_recall_fixture

FIXTURES = paths.FIXTURES / "recall_matlab"
FIXTURE_FILES = sorted(FIXTURES.glob("*.mat"))


def test_all_four_fixtures_present() -> None:
    names = {p.stem for p in FIXTURE_FILES}
    assert names == {"eval_products_like", "eval_inshop_like", "eval_vid_like", "eval_ties"}


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_matlab_fixture_identical(path: Path) -> None:
    rows = check_recall_fixture(path)
    assert [r.quantity for r in rows] == ["recallrate", "recall", "printed"]
    for row in rows:
        assert row.passed, row


def test_fixture_detection_and_foreign_file(tmp_path: Path) -> None:
    mat = scipy.io.loadmat(FIXTURES / "eval_ties.mat")
    assert is_recall_fixture(mat)
    assert not is_recall_fixture({"Xq": 1})
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"a": np.ones(3)})
    with pytest.raises(InputError, match="other.mat"):
        check_recall_fixture(other)


def test_any_file_in_the_format_is_accepted(tmp_path: Path) -> None:
    """A new file written in the fixture format, with values worked out by hand."""
    X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    Y = np.array([[1, 0], [2, 0], [2, 0], [1, 0]], dtype=np.float32)
    # self excluded; ties at equal distance go to the lower index
    # q0: d = [Inf, 0, 2, 2]: first = 1 (label 2) miss@1; @2: 2 (label 2) miss; @3: 3 hit
    # q1: d = [0, Inf, 2, 2]: first = 0 (label 1) miss@1, 2 (label 2) hit@2
    # q2: d = [2, 2, Inf, 0]: 3 (label 1) miss@1, 0 (label 1) miss@2, 1 (label 2) hit@3
    # q3: d = [2, 2, 0, Inf]: 2 (label 2) miss@1, 0 (label 1) hit@2
    recallrate = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1]], dtype=np.float64)
    recall = recallrate.mean(axis=0)
    printed = "K:    1, Recall: 0.000\nK:    2, Recall: 0.500\nK:    3, Recall: 1.000"
    path = tmp_path / "handmade.mat"
    scipy.io.savemat(path, {"Xq": X, "Yq": Y, "Xdb": X, "Ydb": Y, "Ks": np.array([[1, 2, 3]]),
                            "removeDiag": np.array([[1.0]]), "recallrate": recallrate,
                            "recall": recall[None, :], "printed": printed})
    rows = check_recall_fixture(path)
    assert all(r.passed for r in rows), rows
    # a wrong saved value is reported as a failure, not hidden
    recallrate_bad = recallrate.copy()
    recallrate_bad[0, 0] = 1
    scipy.io.savemat(path, {"Xq": X, "Yq": Y, "Xdb": X, "Ydb": Y, "Ks": np.array([[1, 2, 3]]),
                            "removeDiag": np.array([[1.0]]), "recallrate": recallrate_bad,
                            "recall": recall[None, :], "printed": printed})
    rows = check_recall_fixture(path)
    assert [r.passed for r in rows] == [False, True, True]


def test_ties_go_to_lower_database_index() -> None:
    # database items 0..3 all identical; the query's label sits at index 2
    Xdb = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (4, 1))
    Ydb = np.array([5, 6, 7, 8])
    Xq = np.array([[0.6, 0.8]], dtype=np.float32)
    res = recall_at_k(Xq, np.array([7]), Xdb, Ydb, [1, 2, 3, 4], remove_diag=False,
                      progress=False)
    assert res.rank.tolist() == [2]
    assert res.recallrate.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_self_excluded_by_index_not_by_first_neighbour() -> None:
    # item 1 duplicates item 0 exactly and shares its label: with removeDiag only the
    # query's own entry is excluded, so the duplicate is its nearest neighbour (a hit at 1)
    X = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    Y = np.array([1, 1, 2])
    res = recall_at_k(X, Y, X, Y, [1, 2], remove_diag=True, progress=False)
    assert res.recallrate[:, 0].tolist() == [1.0, 1.0, 0.0]
    # query 2 (label 2) has no other label-2 item: a miss at every K except when its own
    # Inf entry is reached, which needs K = 3 = Ndb
    res3 = recall_at_k(X, Y, X, Y, [1, 2, 3], remove_diag=True, progress=False)
    assert res3.recallrate[2].tolist() == [0.0, 0.0, 1.0]
    assert res3.rank.tolist() == [0, 0, 2]
    # without removeDiag the query finds itself first
    res_keep = recall_at_k(X, Y, X, Y, [1], remove_diag=False, progress=False)
    assert res_keep.recallrate[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_queries_without_positive_are_misses_not_dropped() -> None:
    Xq = np.array([[1, 0], [0, 1]], dtype=np.float32)
    Xdb = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    Yq = np.array([1, 9])  # label 9 is not in the database
    Ydb = np.array([1, 2, 3])
    res = recall_at_k(Xq, Yq, Xdb, Ydb, [1, 3], remove_diag=False, progress=False)
    assert res.rank[1] == NO_POSITIVE
    assert res.recallrate.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert res.recall.tolist() == [0.5, 0.5]  # divided by 2 queries, not 1
    assert res.printed == "K:    1, Recall: 0.500\nK:    3, Recall: 0.500"


def test_label_column_one_is_compared() -> None:
    X = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    Y = np.array([[1, 2], [3, 2], [1, 7]], dtype=np.float32)  # column 2 must be ignored
    res = recall_at_k(X, Y, X, Y, [1, 2], remove_diag=True, progress=False)
    # q0: d(1) = 0.4, d(2) = 2 -> nearest is 1 (label 3) miss@1, then 2 (label 1) hit@2
    assert res.recallrate[0].tolist() == [0.0, 1.0]


def test_printed_format_and_unsorted_ks() -> None:
    assert format_recall_lines([1, 1000], [0.6955, 1.0]) == (
        "K:    1, Recall: 0.696\nK: 1000, Recall: 1.000")
    X = np.eye(3, dtype=np.float32)
    Y = np.array([1, 1, 2])
    res = recall_at_k(X, Y, X, Y, [2, 1], remove_diag=True, progress=False)
    assert res.Ks == (1, 2)
    # MATLAB prints opts.Ks(j) next to the recall of the sorted Ks(j)
    assert res.printed.splitlines()[0].startswith("K:    2, Recall: ")


def _naive_matlab(Xq: np.ndarray, yq: np.ndarray, Xdb: np.ndarray, ydb: np.ndarray,
                  Ks: list[int], remove_diag: bool) -> np.ndarray:
    """Literal evaluate_recall: full matrix, stable sort per row, first K labels."""
    D = 2 - 2 * (Xq @ Xdb.T)
    if remove_diag:
        D[np.arange(len(Xq)), np.arange(len(Xq))] = np.inf
    out = np.zeros((len(Xq), len(Ks)))
    for i in range(len(Xq)):
        ind = np.argsort(D[i], kind="stable")
        for j, k in enumerate(Ks):
            out[i, j] = float(np.any(ydb[ind[:k]] == yq[i]))
    return out


@pytest.mark.parametrize("remove_diag", [True, False])
def test_matches_literal_sort_on_random_data_with_small_chunks(remove_diag: bool) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[10] = X[20]  # exact duplicates create ties
    X[30] = X[20]
    y = rng.integers(0, 40, size=150)
    Ks = [1, 2, 5, 10, 50]
    expected = _naive_matlab(X, y, X, y, Ks, remove_diag)
    # chunk of ~7 rows exercises the chunk boundaries
    res = recall_at_k(X, y, X, y, Ks, remove_diag=remove_diag, chunk_bytes=150 * 4 * 7,
                      progress=False)
    np.testing.assert_array_equal(res.recallrate, expected)


def test_bad_input_is_named() -> None:
    X = np.eye(3, dtype=np.float32)
    with pytest.raises(InputError, match="exceeds the database size"):
        recall_at_k(X, [1, 2, 3], X, [1, 2, 3], [4], progress=False)
    with pytest.raises(InputError, match="labels do not match"):
        recall_at_k(X, [1, 2], X, [1, 2, 3], [1], progress=False)
    with pytest.raises(InputError, match="same d"):
        recall_at_k(X, [1, 2, 3], X[:, :2], [1, 2, 3], [1], progress=False)


def test_corrupt_recall_fixture_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 40)
    with pytest.raises(InputError, match="broken.mat"):
        check_recall_fixture(bad)


def test_inconsistent_recall_fixture_names_the_file(tmp_path: Path) -> None:
    # all fields present but not consistent: the error must say which file, not just
    # "labels do not match" / "expected text"
    X = np.eye(3, dtype=np.float32)
    fields = {"Xq": X, "Yq": np.array([[1], [2]]), "Xdb": X, "Ydb": np.array([[1], [2], [3]]),
              "Ks": np.array([[1]]), "removeDiag": np.array([[1.0]]),
              "recallrate": np.zeros((3, 1)), "recall": np.zeros((1, 1)),
              "printed": "K:    1, Recall: 0.000"}
    path = tmp_path / "inconsistent.mat"
    scipy.io.savemat(path, fields)
    with pytest.raises(InputError, match=r"inconsistent.mat: .*labels do not match"):
        check_recall_fixture(path)
    scipy.io.savemat(path, {**fields, "Yq": np.array([[1], [2], [3]]),
                            "printed": np.array([[1.0, 2.0]])})
    with pytest.raises(InputError, match=r"inconsistent.mat: .*expected text"):
        check_recall_fixture(path)
