"""``fastap parity``'s engine: find fixture files, detect each one's family, check, tabulate.

A file's family is decided by its fields (``FAMILIES``, tried in order), so any file in a
documented format is accepted wherever it lives; each family's checker returns one
``ParityRow`` per saved quantity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reproduce.errors import InputError
from reproduce.parity import recall, training, training_step
from reproduce.parity.fastap import FASTAP_REQUIRED, check_fastap_fixture, is_fastap_fixture
from reproduce.parity.fixture_file import load_fixture
from reproduce.parity.row import ParityRow

log = logging.getLogger(__name__)

#: (family name, detector on the loaded variables, checker of the file): tried in order.
FAMILIES: tuple[tuple[str, Callable[[dict[str, Any]], bool],
                      Callable[[Path, dict[str, Any]], list[ParityRow]]], ...] = (
    ("FastAP layer call", is_fastap_fixture, check_fastap_fixture),
    ("Recall@K evaluation", recall.is_recall_fixture, recall.check_recall_fixture),
    ("training sampler", training.is_sampler_fixture, training.check_sampler_fixture),
    ("training optimizer", training.is_adam_fixture, training.check_adam_fixture),
    ("training step", training_step.is_step_fixture, training_step.check_step_fixture),
)


def check_fixture(path: Path) -> list[ParityRow]:
    """Check one fixture file of any known family, detected by its fields; each row
    names the family."""
    path = Path(path)
    mat = load_fixture(path)
    for family, detect, check in FAMILIES:
        if detect(mat):
            rows = check(path, mat)
            for row in rows:
                row.family = row.family or family
            return rows
    fields = sorted(k for k in mat if not k.startswith("__"))
    raise InputError(f"{path}: neither a FastAP fixture (needs {list(FASTAP_REQUIRED)}) nor "
                     f"any other known family ({', '.join(n for n, _, _ in FAMILIES[1:])}); "
                     f"fields found: {fields}")


def find_fixtures(fixture_dirs: Sequence[Path]) -> list[Path]:
    """Every ``*.mat`` in the given folders (or the files themselves), sorted per folder."""
    found: list[Path] = []
    for entry in map(Path, fixture_dirs):
        if entry.is_file():
            found.append(entry)
        elif entry.is_dir():
            found.extend(sorted(entry.glob("*.mat")))
        else:
            raise InputError(f"{entry}: no such fixture folder or file")
    if not found:
        raise InputError(f"no .mat fixture files in {', '.join(map(str, fixture_dirs))}")
    return found


def rows_frame(rows: Sequence[ParityRow]) -> Any:
    """The rows as a pandas DataFrame (columns as in :class:`ParityRow`)."""
    import pandas as pd

    columns = ["case", "quantity", "max_abs_err", "max_rel_err", "tolerance", "verdict", "note",
               "error_over_tolerance", "family"]
    return pd.DataFrame([r.as_dict() for r in rows], columns=columns)


def run_parity(fixture_dirs: Sequence[Path], out: Path | None = None
               ) -> tuple[list[ParityRow], bool]:
    """Check every fixture in ``fixture_dirs``; write ``<out>/parity/parity.csv`` if ``out``.

    Returns the rows and whether all passed. Bad input (missing folder, a file that is no
    fixture) raises ``InputError`` naming the file.
    """
    from tqdm import tqdm

    from reproduce.outputs import command_dir, write_csv

    paths = find_fixtures(fixture_dirs)
    rows: list[ParityRow] = []
    for path in tqdm(paths, desc="parity", unit="file", disable=len(paths) < 2):
        log.debug("checking %s", path)
        rows.extend(check_fixture(path))
    ok = all(r.passed for r in rows)
    if out is not None:
        folder = command_dir(out, "parity", {"fixtures": [str(p) for p in fixture_dirs],
                                             "out": str(out)})
        write_csv(folder / "parity.csv", rows_frame(rows))
    return rows, ok
