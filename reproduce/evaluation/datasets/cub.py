"""CUB-200-2011 (Caltech-UCSD Birds) with the usual class-disjoint retrieval split.

Layout (the official ``CUB_200_2011.tgz`` unpacked): ``images.txt`` (``<image_id>
<image_name>``; its order is the image order), ``image_class_labels.txt`` (``<image_id>
<class_id>``), images at ``images/<image_name>``. ``root`` may also be the folder holding
``CUB_200_2011/``. The official ``train_test_split.txt`` is the classification split and is
not used: metric-learning papers train on classes 1-100 and test on classes 101-200.

No super-classes (``meta`` is 0). The authors never evaluated CUB; the images are pre-resized
to 256x256 as they did for every dataset they prepared (SOP, VehicleID), and the test set is
scored as evaluate_model.m scores SOP: against itself, self excluded, K = 1, 2, 4, 8, 16, 32
(the Ks CUB results are usually reported at).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import (
    Dataset,
    PathList,
    check_counts,
    class_split_counts,
    first_existing,
    read_numbered_table,
    require_file,
    self_retrieval,
    validate_images,
)

NAME = "cub"
KS = (1, 2, 4, 8, 16, 32)
LAST_TRAIN_CLASS = 100
PUBLISHED = {"images": 11788, "train images": 5864, "test images": 5924, "classes": 200,
             "test classes": 100}


def _root(root: Path) -> Path:
    """The folder holding ``images.txt`` (``root`` or ``root/CUB_200_2011``)."""
    return first_existing([root / "images.txt", root / "CUB_200_2011" / "images.txt"],
                          "CUB-200-2011 image list images.txt").parent


def load_cub(root: str | Path, strict: bool = False, verify: str = "exists") -> Dataset:
    """Read CUB-200-2011; ``verify`` checks the test images (``none``/``exists``/``decode``)."""
    base = _root(Path(root))
    images_file = base / "images.txt"
    images = read_numbered_table(images_file, 2, 0, (int, str), "<image_id> <image_name>")
    if not images:
        raise InputError(f"{images_file}: no images listed")
    labels_file = require_file(base / "image_class_labels.txt",
                               "CUB-200-2011 labels <image_id> <class_id>")
    class_of: dict[int, int] = {}
    for lineno, (image_id, class_id) in read_numbered_table(
            labels_file, 2, 0, (int, int), "<image_id> <class_id>"):
        if image_id in class_of:
            raise InputError(f"{labels_file}:{lineno}: image {image_id} labelled twice")
        class_of[int(image_id)] = int(class_id)
    labels = []
    for lineno, (image_id, _name) in images:
        if image_id not in class_of:
            raise InputError(f"{labels_file}: no class for image {image_id} (listed in "
                             f"{images_file}:{lineno})")
        labels.append(class_of[int(image_id)])
    labels_arr = np.array(labels, dtype=np.int64)
    subset, train_idx, test_idx, checks = class_split_counts(labels_arr, LAST_TRAIN_CLASS,
                                                             PUBLISHED)
    if not len(test_idx):
        raise InputError(f"{labels_file}: no image of a test class "
                         f"({LAST_TRAIN_CLASS + 1} and above)")
    paths = PathList(base / "images", [str(name) for _, (_, name) in images])
    validate_images([paths[i] for i in test_idx], NAME, verify)
    protocol = self_retrieval(
        "cub", f"evaluate_model.m scoring: test classes {LAST_TRAIN_CLASS + 1}-200 vs "
               "themselves, self excluded by index", test_idx, KS)
    return Dataset(name=NAME, root=base, paths=paths, labels=labels_arr,
                   meta=np.zeros(len(labels_arr), dtype=np.int64), subset=subset,
                   protocols={protocol.name: protocol}, pre_resize=(256, 256),
                   extra={"image_id": np.array([r[0] for _, r in images], dtype=np.int64)},
                   count_checks=check_counts(checks, NAME, strict))
