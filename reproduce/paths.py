"""Where the project keeps what it ships: the saved MATLAB fixtures beside the tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
# Default inputs of ``fastap parity`` (and of the main job): the saved MATLAB values.
DEFAULT_FIXTURE_DIRS = (FIXTURES / "fastap_matlab", FIXTURES / "recall_matlab")
