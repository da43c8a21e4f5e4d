"""Stanford Online Products as ``+imdb/products.m`` reads it.

Layout: ``<root>/Ebay_train.txt`` and ``<root>/Ebay_test.txt`` (one header line, then
``image_id class_id super_class_id path``), images at ``<root>/<path>``. ``root`` may also be
the folder holding ``Stanford_Online_Products/``. The authors resized every image once to
256x256 (``imresize``, JPEG re-save); the ``"matlab"`` preprocessing redoes that on the fly.
Protocol (evaluate_model.m): the test set against itself, self excluded, K = 1, 10, 100, 1000.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import (
    CountCheck,
    Dataset,
    PathList,
    Protocol,
    Split,
    check_counts,
    first_existing,
    number_of_classes,
    read_table,
    validate_images,
)

NAME = "products"
KS = (1, 10, 100, 1000)
PUBLISHED = {"train images": 59551, "train classes": 11318, "test images": 60502,
             "test classes": 11316, "super-classes": 12}


def _root(root: Path) -> Path:
    """The folder holding ``Ebay_test.txt`` (``root`` or ``root/Stanford_Online_Products``)."""
    candidates = [root / "Ebay_test.txt", root / "Stanford_Online_Products" / "Ebay_test.txt"]
    return first_existing(candidates, "Stanford Online Products test list").parent


def load_products(root: str | Path, strict: bool = False, verify: str = "exists") -> Dataset:
    """Read SOP; ``verify`` checks the test images (``none``/``exists``/``decode``)."""
    base = _root(Path(root))
    fields = (int, int, int, str)
    train_file = base / "Ebay_train.txt"
    train = read_table(train_file, 4, 1, fields, "image_id class_id super_class_id path") \
        if train_file.is_file() else []
    test = read_table(base / "Ebay_test.txt", 4, 1, fields, "image_id class_id super_class_id path")
    if not test:
        raise InputError(f"{base / 'Ebay_test.txt'}: no images listed")
    rows = train + test
    paths = PathList(base, [str(r[3]) for r in rows])
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    meta = np.array([r[2] for r in rows], dtype=np.int64)
    subset = np.array(["train"] * len(train) + ["test"] * len(test))
    test_idx = np.nonzero(subset == "test")[0]
    checks = [CountCheck("test images", PUBLISHED["test images"], len(test_idx)),
              CountCheck("test classes", PUBLISHED["test classes"],
                         number_of_classes(labels[test_idx])),
              CountCheck("super-classes", PUBLISHED["super-classes"], number_of_classes(meta))]
    if train:
        train_idx = np.nonzero(subset == "train")[0]
        checks += [CountCheck("train images", PUBLISHED["train images"], len(train_idx)),
                   CountCheck("train classes", PUBLISHED["train classes"],
                              number_of_classes(labels[train_idx]))]
    validate_images([paths[i] for i in test_idx], NAME, verify)
    protocol = Protocol(
        name="products", family="authors",
        description="authors (evaluate_model.m): test set vs itself, self excluded by index",
        splits=(Split(test_idx, test_idx),), remove_diag=True, Ks=KS)
    return Dataset(name=NAME, root=base, paths=paths, labels=labels, meta=meta, subset=subset,
                   protocols={protocol.name: protocol}, pre_resize=(256, 256),
                   count_checks=check_counts(checks, NAME, strict))
