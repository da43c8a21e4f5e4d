"""Stanford Cars (Cars196) with the usual class-disjoint retrieval split.

Layout (the official ``car_ims.tgz`` and ``cars_annos.mat`` in one folder): ``cars_annos.mat``
holds ``annotations``, a 1 x 16,185 struct array with ``relative_im_path``
(``car_ims/000001.jpg``), ``class`` (1-196), ``test`` (the classification split, kept in
``extra["test_flag"]`` but not used) and the bounding box; images at
``<root>/<relative_im_path>``. Metric-learning papers train on classes 1-98 and test on classes
99-196.

No super-classes (``meta`` is 0). The authors never evaluated Cars196; the images are
pre-resized to 256x256 as they did for every dataset they prepared, and the test set is scored
as evaluate_model.m scores SOP: against itself, self excluded, K = 1, 2, 4, 8, 16, 32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import MatConvNetError
from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import (
    Dataset,
    PathList,
    check_counts,
    class_split_counts,
    require_file,
    self_retrieval,
    validate_images,
)

NAME = "cars"
KS = (1, 2, 4, 8, 16, 32)
LAST_TRAIN_CLASS = 98
ANNOTATIONS = "cars_annos.mat"
FIELDS = ("relative_im_path", "class", "test")
PUBLISHED = {"images": 16185, "train images": 8054, "test images": 8131, "classes": 196,
             "test classes": 98}


def _annotations(path: Path) -> list[dict[str, Any]]:
    """The ``annotations`` struct array of ``cars_annos.mat`` as a list of dicts."""
    from converters.matio.read import load_mat

    try:
        tree = load_mat(path, ["annotations"])
    except MatConvNetError as exc:
        raise InputError(f"{path}: cannot read the annotations: {exc}") from exc
    annotations = tree.get("annotations")
    if isinstance(annotations, dict):  # a 1x1 struct array: one image
        annotations = [annotations]
    if not isinstance(annotations, list) or not annotations:
        raise InputError(f"{path}: no 'annotations' struct array (relative_im_path, class, "
                         "test per image)")
    return annotations


def _integer(value: Any, path: Path, index: int, field: str) -> int:
    """A 1x1 numeric field of ``annotations(index)`` as an int, or an ``InputError``."""
    array = np.asarray(value)
    if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{path}: annotations({index}).{field} is not a number: {value!r}")
    number = float(array.ravel()[0])
    if number != int(number):
        raise InputError(f"{path}: annotations({index}).{field} is not an integer: {number}")
    return int(number)


def load_cars(root: str | Path, strict: bool = False, verify: str = "exists") -> Dataset:
    """Read Cars196; ``verify`` checks the test images (``none``/``exists``/``decode``)."""
    base = Path(root)
    path = require_file(base / ANNOTATIONS, "Cars196 annotations (annotations struct array)")
    rel_paths, labels, test_flag = [], [], []
    for index, entry in enumerate(_annotations(path), start=1):
        missing = [f for f in FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise InputError(f"{path}: annotations({index}) has no field "
                             f"{', '.join(missing)} (expected {', '.join(FIELDS)})")
        rel = entry["relative_im_path"]
        if not isinstance(rel, str) or not rel:
            raise InputError(f"{path}: annotations({index}).relative_im_path is not a file "
                             f"name: {rel!r}")
        rel_paths.append(rel)
        labels.append(_integer(entry["class"], path, index, "class"))
        test_flag.append(_integer(entry["test"], path, index, "test"))
    labels_arr = np.array(labels, dtype=np.int64)
    subset, train_idx, test_idx, checks = class_split_counts(labels_arr, LAST_TRAIN_CLASS,
                                                             PUBLISHED)
    if not len(test_idx):
        raise InputError(f"{path}: no image of a test class ({LAST_TRAIN_CLASS + 1} and above)")
    paths = PathList(base, rel_paths)
    validate_images([paths[i] for i in test_idx], NAME, verify)
    protocol = self_retrieval(
        "cars", f"evaluate_model.m scoring: test classes {LAST_TRAIN_CLASS + 1}-196 vs "
                "themselves, self excluded by index", test_idx, KS)
    return Dataset(name=NAME, root=base, paths=paths, labels=labels_arr,
                   meta=np.zeros(len(labels_arr), dtype=np.int64), subset=subset,
                   protocols={protocol.name: protocol}, pre_resize=(256, 256),
                   extra={"test_flag": np.array(test_flag, dtype=np.int64)},
                   count_checks=check_counts(checks, NAME, strict))
