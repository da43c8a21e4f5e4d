"""What every dataset reader returns: images, labels, evaluation protocols, count checks.

A reader turns an on-disk dataset into a :class:`Dataset`: one list of image paths in the
order the MATLAB ``imdb`` code builds it (the order matters, ties go to the lower database
index), the class of each image (label column 1, the one Recall@K compares), its
meta-/super-class, and the named evaluation :class:`Protocol` of the paper. Each reader
compares the counts it finds with the published ones (:class:`CountCheck`): a mismatch is
logged as a warning and kept in ``Dataset.count_checks`` for the report, or raises an
``InputError`` when the reader is called with ``strict=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from reproduce.errors import InputError

log = logging.getLogger(__name__)

MAX_LISTED_PATHS = 10
"""How many offending paths an error message lists before summarising the rest."""


class PathList(Sequence[Path]):
    """Image paths ``base / relative`` built on access (a list of 200k ``Path`` objects takes
    seconds to build; most are never touched)."""

    def __init__(self, base: Path, relative: Sequence[str]):
        self.base = Path(base)
        self.relative = list(relative)

    def __len__(self) -> int:
        return len(self.relative)

    @overload
    def __getitem__(self, i: int) -> Path: ...

    @overload
    def __getitem__(self, i: slice) -> list[Path]: ...

    def __getitem__(self, i: int | slice) -> Path | list[Path]:
        if isinstance(i, slice):
            return [Path(os.path.join(self.base, r)) for r in self.relative[i]]
        return Path(os.path.join(self.base, self.relative[i]))

    def __iter__(self) -> Iterator[Path]:
        for r in self.relative:
            yield Path(os.path.join(self.base, r))


@dataclass(frozen=True)
class Split:
    """One query/database pairing: indices into ``Dataset.paths``."""

    query: np.ndarray
    database: np.ndarray


@dataclass(frozen=True)
class Protocol:
    """A named way to score a dataset: which images query which, self excluded or not, Ks.

    ``splits`` holds one pairing, or several (seeded random draws) whose Recall@K is averaged.
    ``family`` is ``"authors"`` (evaluate_model.m) or ``"reid"`` (the common VehicleID
    re-identification protocol); ``name`` is unique within a dataset and says which.
    """

    name: str
    family: str
    description: str
    splits: tuple[Split, ...]
    remove_diag: bool
    Ks: tuple[int, ...]
    seed: int | None = None

    def image_indices(self) -> np.ndarray:
        """Every image this protocol needs an embedding for (sorted, unique)."""
        parts = [s.query for s in self.splits] + [s.database for s in self.splits]
        return np.unique(np.concatenate(parts))

    def record(self) -> dict[str, object]:
        """What goes into output files to say how the numbers were obtained."""
        first = self.splits[0]
        return {"name": self.name, "family": self.family, "description": self.description,
                "remove_diag": self.remove_diag, "Ks": list(self.Ks), "draws": len(self.splits),
                "seed": self.seed, "num_query": int(len(first.query)),
                "num_database": int(len(first.database))}


@dataclass(frozen=True)
class CountCheck:
    """A count found on disk next to the published one."""

    what: str
    expected: int
    found: int

    @property
    def ok(self) -> bool:
        """Whether the found count equals the published count."""
        return self.expected == self.found

    def message(self) -> str:
        """One line for logs and reports."""
        status = "ok" if self.ok else "MISMATCH"
        return f"{self.what}: found {self.found}, published {self.expected} ({status})"


@dataclass
class Dataset:
    """An evaluation dataset as the MATLAB ``imdb`` builds it.

    ``labels`` is the class (label column 1), ``meta`` the meta-/super-class (column 2 as the
    MATLAB code fills it), ``extra`` further label columns by name, ``subset`` the split name
    of each image. ``pre_resize`` is ``(256, 256)`` when the authors resized the images once
    before training (SOP, VehicleID), ``None`` when used as they are (In-Shop).
    """

    name: str
    root: Path
    paths: Sequence[Path]
    labels: np.ndarray
    meta: np.ndarray
    subset: np.ndarray
    protocols: dict[str, Protocol]
    pre_resize: tuple[int, int] | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    count_checks: list[CountCheck] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def protocol_names(self, family: str | None = None) -> list[str]:
        """Names of the protocols, optionally only those of one family."""
        return [n for n, p in self.protocols.items() if family is None or p.family == family]

    def report(self) -> dict[str, object]:
        """Counts and their checks, for output files."""
        return {"name": self.name, "root": str(self.root), "num_images": len(self.paths),
                "pre_resize": list(self.pre_resize) if self.pre_resize else None,
                "count_checks": [{"what": c.what, "expected": c.expected, "found": c.found,
                                  "ok": c.ok} for c in self.count_checks]}


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an ``InputError`` naming it and what it should hold."""
    if not path.is_file():
        raise InputError(f"{path}: missing ({what})")
    return path


def first_existing(candidates: Sequence[Path], what: str) -> Path:
    """The first of ``candidates`` that exists, else an ``InputError`` listing all of them."""
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise InputError(f"{what}: not found (looked for {tried})")


def read_numbered_table(path: Path, columns: int, header_lines: int, types: Sequence[type],
                        what: str) -> list[tuple[int, list[object]]]:
    """``(line number, row)`` for the whitespace-separated rows of ``columns`` fields after
    ``header_lines`` lines (1-based line numbers, for messages that name the line).

    Converts each field with ``types``; a short row or a bad number raises an ``InputError``
    naming the file and line. Blank lines are skipped (MATLAB's ``textread`` skips them too).
    """
    text = read_text(path, what)
    rows: list[tuple[int, list[object]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if lineno <= header_lines or not line.strip():
            continue
        fields = line.split()
        if len(fields) < columns:
            raise InputError(f"{path}:{lineno}: expected {columns} fields ({what}), got "
                             f"{len(fields)}: {line.strip()!r}")
        try:
            rows.append((lineno, [t(f) for t, f in zip(types, fields[:columns], strict=True)]))
        except ValueError as exc:
            raise InputError(f"{path}:{lineno}: bad value ({what}): {line.strip()!r}") from exc
    return rows


def read_table(path: Path, columns: int, header_lines: int, types: Sequence[type],
               what: str) -> list[list[object]]:
    """The rows of :func:`read_numbered_table` without their line numbers."""
    return [row for _, row in read_numbered_table(path, columns, header_lines, types, what)]


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's content; an ``InputError`` naming it when missing or binary."""
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({what}): {exc}") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{path}: missing ({what})") from exc


def class_split(labels: np.ndarray, last_train_class: int) -> np.ndarray:
    """``"train"`` for images whose class is at most ``last_train_class``, else ``"test"``
    (the class-disjoint split of CUB-200-2011 and Cars196)."""
    return np.where(labels <= last_train_class, "train", "test")


def class_split_counts(labels: np.ndarray, last_train_class: int, published: dict[str, int]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[CountCheck]]:
    """The class-disjoint split of CUB-200-2011 and Cars196 and its count checks.

    Returns ``(subset, train_idx, test_idx, checks)``: the split per image, the positions of
    each part, and the images / train / test / classes / test-classes counts against
    ``published`` (keys as those five names).
    """
    subset = class_split(labels, last_train_class)
    test_idx = np.nonzero(subset == "test")[0]
    train_idx = np.nonzero(subset == "train")[0]
    checks = [CountCheck("images", published["images"], len(labels)),
              CountCheck("train images", published["train images"], len(train_idx)),
              CountCheck("test images", published["test images"], len(test_idx)),
              CountCheck("classes", published["classes"], number_of_classes(labels)),
              CountCheck("test classes", published["test classes"],
                         number_of_classes(labels[test_idx]))]
    return subset, train_idx, test_idx, checks


def self_retrieval(name: str, description: str, members: np.ndarray,
                   Ks: tuple[int, ...]) -> Protocol:
    """The evaluate_model.m protocol on one set: ``members`` against themselves, each query's
    own entry excluded (``removeDiag``), as for SOP."""
    return Protocol(name=name, family="authors", description=description,
                    splits=(Split(members, members),), remove_diag=True, Ks=Ks)


def check_counts(checks: Iterable[CountCheck], dataset: str, strict: bool) -> list[CountCheck]:
    """Log each check; mismatches are warnings, or an ``InputError`` when ``strict``."""
    checks = list(checks)
    bad = [c for c in checks if not c.ok]
    for c in checks:
        (log.warning if not c.ok else log.debug)("%s: %s", dataset, c.message())
    if bad and strict:
        raise InputError(f"{dataset}: counts differ from the published ones: "
                         + "; ".join(c.message() for c in bad))
    return checks


def check_images_exist(paths: Sequence[Path], dataset: str) -> None:
    """Raise an ``InputError`` listing missing image files (the first few, then a count)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing[:MAX_LISTED_PATHS])
        more = f" and {len(missing) - MAX_LISTED_PATHS} more" if len(missing) > MAX_LISTED_PATHS \
            else ""
        raise InputError(f"{dataset}: {len(missing)} of {len(paths)} images missing: "
                         f"{listed}{more}")


def find_unreadable_images(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Images Pillow cannot decode, with the reason (a full decode of each file: slow)."""
    from PIL import Image

    bad: list[tuple[Path, str]] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            bad.append((p, str(exc)))
    return bad


def check_images_readable(paths: Sequence[Path], dataset: str) -> None:
    """Raise an ``InputError`` listing images that cannot be decoded."""
    bad = find_unreadable_images(paths)
    if bad:
        listed = "; ".join(f"{p} ({why})" for p, why in bad[:MAX_LISTED_PATHS])
        raise InputError(f"{dataset}: {len(bad)} of {len(paths)} images unreadable: {listed}")


def validate_images(paths: Sequence[Path], dataset: str, verify: str) -> None:
    """``verify``: ``"none"``, ``"exists"`` (every file is there) or ``"decode"`` (and decodes)."""
    if verify not in ("none", "exists", "decode"):
        raise InputError(f"verify must be none, exists or decode, got {verify!r}")
    if verify in ("exists", "decode"):
        check_images_exist(paths, dataset)
    if verify == "decode":
        check_images_readable(paths, dataset)


def number_of_classes(labels: np.ndarray) -> int:
    """How many distinct labels."""
    return int(len(np.unique(labels)))
