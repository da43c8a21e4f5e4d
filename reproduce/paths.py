"""Where the files the package ships are found, installed or in a checkout.

Everything the main job and ``fastap parity`` read by default is package data, found through
``importlib.resources``: the saved MATLAB fixtures with their READMEs, the published numbers
and the sample diaries. Nothing here points outside the installed package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """A file or folder shipped inside ``package`` (an installed wheel unpacks to real files)."""
    return Path(str(resources.files(package).joinpath(*parts)))


#: The saved MATLAB values, one folder per family, each with its README.
FIXTURES = package_path("reproduce.parity", "fixtures")
#: Default inputs of ``fastap parity`` (and of the main job): every shipped fixture family.
DEFAULT_FIXTURE_DIRS = (FIXTURES / "fastap_matlab", FIXTURES / "recall_matlab",
                        FIXTURES / "training_matlab")
#: The paper's published numbers and their README.
PUBLISHED_DIR = package_path("reproduce.report", "data")
