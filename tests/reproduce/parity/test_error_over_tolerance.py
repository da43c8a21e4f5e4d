"""``error_over_tolerance`` of parity rows: the worst entry's error over its own bound.

It must agree with the verdict exactly (at most 1 when a row passes, above 1 when it
fails), equal hand-computed ratios, and match ``max_rel_err / rel`` where the tolerance is
one relative number.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from reproduce import paths
from reproduce.parity.row import error_ratio
from reproduce.parity.run import run_parity
from reproduce.parity.training import compare_row

FIXTURES = paths.FIXTURES


def test_ratio_and_verdict_agree_at_the_last_bit() -> None:
    rng = np.random.default_rng(0)
    bounds = np.concatenate([rng.uniform(1e-300, 1e300, 500), 2.0 ** rng.integers(-1070, 1000,
                                                                                     500),
                             np.nextafter(2.0 ** rng.integers(-1000, 1000, 500), 0.0)])
    for b in bounds:
        assert error_ratio(b, b) == 1.0
        assert error_ratio(np.nextafter(b, np.inf), b) > 1.0
        assert error_ratio(np.nextafter(b, 0.0), b) <= 1.0
    assert error_ratio(0.0, 0.0) == 0.0 and error_ratio(1e-300, 0.0) == np.inf
    assert error_ratio(np.array([]), 1.0) == 0.0


def test_entrywise_bound_ratio_by_hand() -> None:
    theirs = np.array([1.0, 2.0, 3.0])
    ours = np.array([1.0, 2.0, 3.5])
    row = compare_row("c", "q", ours, theirs, abs_tol=np.array([0.0, 0.0, 1.0]))
    assert row.passed and row.error_over_tolerance == 0.5
    row = compare_row("c", "q", ours, theirs, abs_tol=np.array([0.0, 0.0, 0.25]))
    assert not row.passed and row.error_over_tolerance == 2.0
    row = compare_row("c", "q", ours, theirs, abs_tol=np.array([0.0, 0.0, 0.5]))
    assert row.passed and row.error_over_tolerance == 1.0  # on the bound: passes
    row = compare_row("c", "q", ours, theirs,
                      abs_tol=np.array([0.0, 0.0, np.nextafter(0.5, 0.0)]))
    assert not row.passed and row.error_over_tolerance > 1.0
    # relative to the largest MATLAB magnitude (10): 0.02 * 10 = 0.2 allowed, 0.1 off
    row = compare_row("c", "q", [0.0, 10.1], [0.0, 10.0], rel=0.02)
    assert row.passed and row.error_over_tolerance == pytest.approx(0.5)
    row = compare_row("c", "q", [1.0, 2.0], [1.0, 2.0])
    assert row.passed and row.error_over_tolerance == 0.0
    row = compare_row("c", "q", [1.0, 2.0], [1.0, 2.0 + 2 ** -51])
    assert not row.passed and row.error_over_tolerance == np.inf  # identical required


@pytest.fixture(scope="module")
def every_row() -> list:
    rows, ok = run_parity(list(paths.DEFAULT_FIXTURE_DIRS))
    assert ok
    return rows


def test_every_shipped_row_has_a_ratio_within_one(every_row: list) -> None:
    ratios = np.array([r.error_over_tolerance for r in every_row])
    assert np.isfinite(ratios).all() and (ratios >= 0).all() and (ratios <= 1.0).all()
    families = {r.family for r in every_row}
    assert families == {"FastAP layer call", "Recall@K evaluation", "training sampler",
                        "training optimizer", "training step"}


_PLAIN_REL = re.compile(r"^rel (?P<rel>[0-9.e+-]+)(?: \([a-z]+, [a-z]+\))?$")


def test_single_relative_tolerances_give_max_rel_over_rel(every_row: list) -> None:
    """Where the bound is ``rel * max|MATLAB|`` the ratio is ``max_rel_err / rel``."""
    checked = 0
    for row in every_row:
        match = _PLAIN_REL.match(row.tolerance)
        if match is None:
            continue
        rel = float(match.group("rel"))
        assert row.error_over_tolerance == pytest.approx(row.max_rel_err / rel, rel=1e-9,
                                                         abs=1e-300), (row.case, row.quantity)
        checked += 1
    assert checked > 300  # FastAP stages (rel 1e-12) and the training step's plain kinds
