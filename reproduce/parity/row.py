"""One line of a parity report: a saved MATLAB quantity compared with ours."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class ParityRow:
    """``verdict`` is ``"pass"`` or ``"fail"``; ``note`` explains exemptions or special cases.

    ``case`` is the fixture's file stem, ``quantity`` the MATLAB field name (``h_pos``,
    ``recallrate``, ``printed``). Errors are max absolute and max relative over all entries.
    ``error_over_tolerance`` is the largest ``|ours - theirs| / bound`` over the entries,
    with the bound the checker tested each entry against (a scalar, or the entrywise bound
    array): at most 1 exactly when the row passes, above 1 when it fails; NaN when the
    checker did not compute it. ``family`` is the fixture family (``run.FAMILIES``) the row
    came from, filled in by ``run.check_fixture``.
    """

    case: str
    quantity: str
    max_abs_err: float
    max_rel_err: float
    tolerance: str
    verdict: str
    note: str = ""
    error_over_tolerance: float = float("nan")
    family: str = ""

    @property
    def passed(self) -> bool:
        """Whether this comparison is within tolerance."""
        return self.verdict == "pass"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for CSV/JSON output."""
        return asdict(self)


def error_ratio(error: Any, bound: Any) -> float:
    """``max(error / bound)`` over the entries: how far a comparison is from failing.

    ``error`` holds the absolute differences, ``bound`` the allowance each was tested
    against (same shape, or a scalar). ``0 / 0`` is 0 and ``x / 0`` is ``inf``; no entries
    is 0. Correctly rounded division is monotonic and two different floats differ by more
    than one part in ``2^53``, so ``error <= bound`` gives a ratio of at most 1 and
    ``error > bound`` one above 1: the ratio agrees with a verdict drawn from the same
    numbers.
    """
    e = np.asarray(error, dtype=np.float64)
    if e.size == 0:
        return 0.0
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), e.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(e == 0, 0.0, e / b)
    return float(ratio.max())


def flag_ratio(passed: bool) -> float:
    """The ratio of a yes/no comparison (identical text, empty state, all draws used)."""
    return 0.0 if passed else float("inf")
