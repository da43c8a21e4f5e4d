"""One line of a parity report: a saved MATLAB quantity compared with ours."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ParityRow:
    """``verdict`` is ``"pass"`` or ``"fail"``; ``note`` explains exemptions or special cases.

    ``case`` is the fixture's file stem, ``quantity`` the MATLAB field name (``h_pos``,
    ``recallrate``, ``printed``). Errors are max absolute and max relative over all entries.
    """

    case: str
    quantity: str
    max_abs_err: float
    max_rel_err: float
    tolerance: str
    verdict: str
    note: str = ""

    @property
    def passed(self) -> bool:
        """Whether this comparison is within tolerance."""
        return self.verdict == "pass"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for CSV/JSON output."""
        return asdict(self)
