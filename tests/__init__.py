"""The test suite: one folder per package, mirroring it; shared builders in ``conftest.py``."""

from pathlib import Path

#: Real MATLAB- and MatConvNet-written files (checkpoints, diaries, VehicleID lists) used as inputs.
REALFILES = Path(__file__).resolve().parent / "fixtures" / "realfiles"
