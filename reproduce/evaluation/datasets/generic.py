"""Any retrieval dataset from a list file: one image per line with its class.

The list (``--list FILE``) is either a CSV file (name ending ``.csv``: comma-separated,
quoting allowed, so paths may hold spaces or commas) or a whitespace-separated text file (any
other name; paths without spaces). Its first non-blank line is a **required** header naming
the columns, in any order (case-insensitive):

- ``path`` (required): the image file, relative to the root folder (``--root``; default the
  list file's folder) or absolute;
- ``class`` (required): the class; any text (integers are kept as they are, other names are
  numbered 1, 2, ... in order of first appearance); Recall@K compares it;
- ``superclass`` (optional): kept as ``meta`` (0 when absent), not used for scoring;
- ``split`` (optional): ``train``, ``test``, ``query`` or ``gallery`` per image (without the
  column every image is ``test``).

Other columns are ignored with a warning (a misspelt ``split`` would otherwise silently make
every image a test image). Blank lines are skipped. Protocols (the evaluate_model.m scoring):

- ``list-test`` when any image is ``test``: the test images against themselves, self
  excluded, K = 1, 2, 4, 8, 16, 32 (the SOP/CUB/Cars convention);
- ``list-query-gallery`` when any image is ``query`` or ``gallery`` (then both must occur):
  queries against the gallery, nothing excluded, K = 1, 10, 20, 30, 40, 50 (the In-Shop
  convention).

``train`` images are listed but not scored. There are no published counts to check. Images
are pre-resized to 256x256 by the ``matlab`` preprocessing, the convention the authors applied
to the datasets they prepared. Bad input (missing header column, malformed line, unknown split,
missing image) is an ``InputError`` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import (
    MAX_LISTED_PATHS,
    Dataset,
    PathList,
    Protocol,
    Split,
    check_images_readable,
    read_text,
    self_retrieval,
)

log = logging.getLogger(__name__)

NAME = "list"
COLUMNS = ("path", "class", "superclass", "split")
REQUIRED = ("path", "class")
SPLITS = ("train", "test", "query", "gallery")
TEST_KS = (1, 2, 4, 8, 16, 32)
QUERY_GALLERY_KS = (1, 10, 20, 30, 40, 50)


def _records(list_file: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line, header included."""
    # a spreadsheet's CSV export may start with a byte-order mark
    text = read_text(list_file, "image list: path,class[,superclass][,split]").lstrip("\ufeff")
    if list_file.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text))
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise InputError(f"{list_file}:{reader.line_num}: malformed CSV: {exc}") from exc
        return [(n, [f.strip() for f in row]) for n, row in rows
                if any(f.strip() for f in row)]
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip()]


def _header(list_file: Path, lineno: int, fields: list[str]) -> dict[str, int]:
    """Column name -> position from the header line (required columns checked)."""
    names = [f.lower() for f in fields]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(f"{list_file}:{lineno}: the header names no {' or '.join(missing)} "
                         f"column (the first line must name the columns, e.g. "
                         f"'path class split'); got {fields}")
    doubled = sorted({n for n in names if names.count(n) > 1 and n in COLUMNS})
    if doubled:
        raise InputError(f"{list_file}:{lineno}: column {', '.join(doubled)} named twice")
    ignored = [f for f, n in zip(fields, names, strict=True) if n not in COLUMNS]
    if ignored:
        log.warning("%s:%d: ignoring column(s) %s (known: %s)", list_file, lineno,
                    ", ".join(ignored), ", ".join(COLUMNS))
    return {n: i for i, n in enumerate(names) if n in COLUMNS}


def _numbered(values: list[str]) -> np.ndarray:
    """Integer labels as they are; any other names numbered 1, 2, ... by first appearance."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        order: dict[str, int] = {}
        return np.array([order.setdefault(v, len(order) + 1) for v in values], dtype=np.int64)


def _check_images(paths: PathList, lines: list[int], members: np.ndarray, list_file: Path,
                  verify: str) -> None:
    """Missing images named with their list line; ``decode`` also opens each one."""
    if verify not in ("none", "exists", "decode"):
        raise InputError(f"verify must be none, exists or decode, got {verify!r}")
    if verify == "none":
        return
    missing = [i for i in members.tolist() if not paths[i].is_file()]
    if missing:
        listed = "; ".join(f"line {lines[i]}: {paths[i]}" for i in missing[:MAX_LISTED_PATHS])
        more = f" and {len(missing) - MAX_LISTED_PATHS} more" \
            if len(missing) > MAX_LISTED_PATHS else ""
        raise InputError(f"{list_file}:{lines[missing[0]]}: {len(missing)} of {len(members)} "
                         f"images missing: {listed}{more}")
    if verify == "decode":
        check_images_readable([paths[i] for i in members.tolist()], str(list_file))


def _protocols(list_file: Path, subset: np.ndarray) -> dict[str, Protocol]:
    """``list-test`` and/or ``list-query-gallery`` from the split of each image."""
    idx = {s: np.nonzero(subset == s)[0] for s in SPLITS}
    protocols: dict[str, Protocol] = {}
    if len(idx["test"]):
        protocols["list-test"] = self_retrieval(
            "list-test", "evaluate_model.m scoring: the test images vs themselves, self "
                         "excluded by index", idx["test"], TEST_KS)
    if len(idx["query"]) or len(idx["gallery"]):
        if not len(idx["query"]) or not len(idx["gallery"]):
            raise InputError(f"{list_file}: needs both query and gallery images, found "
                             f"{len(idx['query'])} and {len(idx['gallery'])}")
        protocols["list-query-gallery"] = Protocol(
            name="list-query-gallery", family="authors",
            description="evaluate_model.m scoring: query images vs gallery images, nothing "
                        "excluded", splits=(Split(idx["query"], idx["gallery"]),),
            remove_diag=False, Ks=QUERY_GALLERY_KS)
    if not protocols:
        raise InputError(f"{list_file}: no test, query or gallery image to evaluate (only "
                         "train images)")
    return protocols


def load_list(root: str | os.PathLike[str] | None = None, strict: bool = False,
              verify: str = "exists", list_file: str | os.PathLike[str] | None = None
              ) -> Dataset:
    """Read the dataset described by ``list_file`` with images under ``root`` (default: the
    list file's folder). ``strict`` has nothing to check (no published counts)."""
    if list_file is None:
        raise InputError("dataset 'list' needs an image list (--list FILE)")
    list_path = Path(list_file)
    base = Path(root) if root is not None else list_path.parent
    records = _records(list_path)
    if not records:
        raise InputError(f"{list_path}: empty (expected a header line naming the columns)")
    header_line, header_fields = records[0]
    column = _header(list_path, header_line, header_fields)
    rel, classes, supers, splits, lines = [], [], [], [], []
    for lineno, fields in records[1:]:
        if len(fields) != len(header_fields):
            raise InputError(f"{list_path}:{lineno}: expected {len(header_fields)} fields "
                             f"({' '.join(header_fields)}), got {len(fields)}: {fields}")
        row = {name: fields[i] for name, i in column.items()}
        empty = [name for name, value in row.items() if not value]
        if empty:
            raise InputError(f"{list_path}:{lineno}: empty {', '.join(empty)} field")
        split = row.get("split", "test").lower()
        if split not in SPLITS:
            raise InputError(f"{list_path}:{lineno}: unknown split value {row['split']!r} "
                             f"(expected one of {', '.join(SPLITS)})")
        rel.append(row["path"])
        classes.append(row["class"])
        supers.append(row.get("superclass", "0"))
        splits.append(split)
        lines.append(lineno)
    if not rel:
        raise InputError(f"{list_path}: no images listed after the header")
    subset = np.array(splits)
    protocols = _protocols(list_path, subset)
    paths = PathList(base, rel)
    members = np.unique(np.concatenate([p.image_indices() for p in protocols.values()]))
    _check_images(paths, lines, members, list_path, verify)
    return Dataset(name=NAME, root=base, paths=paths, labels=_numbered(classes),
                   meta=_numbered(supers), subset=subset, protocols=protocols,
                   pre_resize=(256, 256),
                   extra={"line": np.array(lines, dtype=np.int64)}, count_checks=[])
