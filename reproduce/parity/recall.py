"""Parity of our Recall@K with saved MATLAB results (``reproduce/parity/fixtures/recall_matlab/``).

A recall fixture is a MAT file holding one call of ``evaluate_recall``: ``Xq``, ``Yq``,
``Xdb``, ``Ydb``, ``Ks``, ``removeDiag`` and its outputs ``recallrate`` (per query),
``recall`` (the means) and ``printed`` (the lines MATLAB printed). Any file with these fields
is accepted. Everything must be identical: 0/1 per query, the means to the last bit, the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.recall import recall_at_k
from reproduce.parity.fixture_file import fixture_text, load_fixture
from reproduce.parity.row import ParityRow, flag_ratio

REQUIRED_FIELDS = ("Xq", "Yq", "Xdb", "Ydb", "Ks", "removeDiag", "recallrate", "recall",
                   "printed")


def is_recall_fixture(mat: dict[str, Any]) -> bool:
    """Whether a loaded MAT dict (``scipy.io.loadmat``) is a saved ``evaluate_recall`` call."""
    return all(name in mat for name in REQUIRED_FIELDS)


def _row(case: str, quantity: str, ours: np.ndarray, theirs: np.ndarray,
         note: str = "") -> ParityRow:
    """One exact-equality comparison as a ParityRow (errors are max abs / max rel)."""
    if ours.shape != theirs.shape:
        return ParityRow(case, quantity, float("inf"), float("inf"), "identical", "fail",
                         f"shape {ours.shape} vs MATLAB {theirs.shape}", float("inf"))
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    denom = np.abs(theirs.astype(np.float64))
    rel = np.divide(diff, denom, out=np.where(diff > 0, np.inf, 0.0), where=denom > 0)
    max_rel = float(rel.max()) if rel.size else 0.0
    same = bool(np.array_equal(ours, theirs))
    if not same and not note:
        bad = int(np.count_nonzero(ours != theirs))
        note = f"{bad} of {ours.size} entries differ"
    return ParityRow(case, quantity, max_abs, max_rel, "identical", "pass" if same else "fail",
                     note, flag_ratio(same))


def check_recall_fixture(path: Path, mat: dict[str, Any] | None = None) -> list[ParityRow]:
    """Recompute a saved ``evaluate_recall`` call and compare every output with MATLAB's.

    Returns one row each for ``recallrate`` (per query), ``recall`` and ``printed``.
    Raises ``InputError`` naming the file when it is not in the recall-fixture format.
    """
    path = Path(path)
    mat = load_fixture(path) if mat is None else mat  # the caller may have read it already
    if not is_recall_fixture(mat):
        missing = [f for f in REQUIRED_FIELDS if f not in mat]
        raise InputError(f"{path}: not a recall fixture, missing fields {missing}")
    case = path.stem
    if "case_name" in mat:
        case = fixture_text(mat["case_name"], "\n") or case
    try:
        Ks = np.asarray(mat["Ks"]).ravel()
        remove_diag = bool(np.asarray(mat["removeDiag"]).ravel()[0])
        result = recall_at_k(mat["Xq"], mat["Yq"], mat["Xdb"], mat["Ydb"], Ks,
                             remove_diag=remove_diag, progress=False)
        expected_text = fixture_text(mat["printed"], "\n").strip()
    except (InputError, IndexError) as exc:  # inconsistent fields: say which file
        raise InputError(f"{path}: not a valid recall fixture: {exc}") from exc
    rows = [
        _row(case, "recallrate", result.recallrate, np.asarray(mat["recallrate"],
                                                               dtype=np.float64)),
        _row(case, "recall", result.recall, np.asarray(mat["recall"], dtype=np.float64).ravel()),
    ]
    ours_text = result.printed.strip()
    same = ours_text == expected_text
    note = "" if same else f"ours {ours_text!r} vs MATLAB {expected_text!r}"
    rows.append(ParityRow(case, "printed", 0.0 if same else 1.0, 0.0 if same else 1.0,
                          "identical", "pass" if same else "fail", note, flag_ratio(same)))
    return rows
