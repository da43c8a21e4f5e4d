"""DeepFashion In-Shop Clothes Retrieval as ``+imdb/inshop.m`` reads it.

Layout: ``<root>/Anno/list_bbox_inshop.txt`` (two header lines, then ``image_name
clothes_type pose_type x_1 y_1 x_2 y_2``; its order is the image order), the partition
``list_eval_partition.txt`` (two header lines, ``image_name item_id evaluation_status``) in
``<root>`` as the MATLAB code expects or in ``<root>/Eval`` as the official release ships it,
images at ``<root>/<image_name>`` (``img/GENDER/Category/id_XXXXXXXX/file.jpg``), or at
``<root>/Img/<image_name>`` where the official ``Img/img.zip`` was unpacked in place. ``root``
may also be the folder holding ``InShopClothes/``.

Labels: class = the number in ``id_XXXXXXXX``; meta-class = the 1-based position of
``GENDER/Category`` in the authors' ``meta_classes.txt`` when that file is present (0 when a
pair is not listed, as ``ismember`` gives), otherwise the 1-based position in the sorted list
of the pairs found (the authors' file order is unknown; only training uses meta-classes).
Images are used as they are (no 256x256 pre-resize). Protocol: query set against gallery set,
nothing excluded, K = 1, 10, 20, 30, 40, 50.
"""

from __future__ import annotations

import logging
import re
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
    read_numbered_table,
    read_table,
    validate_images,
)

log = logging.getLogger(__name__)

NAME = "inshop"
KS = (1, 10, 20, 30, 40, 50)
PUBLISHED = {"images": 52712, "train images": 25882, "query images": 14218,
             "gallery images": 12612, "train classes": 3997, "test classes": 3985,
             "meta-classes": 23}
SETS = ("train", "query", "gallery")
_ID = re.compile(r"^id_(\d+)$")


def _root(root: Path) -> Path:
    """The folder holding ``Anno/list_bbox_inshop.txt``."""
    rel = Path("Anno") / "list_bbox_inshop.txt"
    return first_existing([root / rel, root / "InShopClothes" / rel],
                          "In-Shop image list").parent.parent


def _class_and_meta(name: str, path: Path, lineno: int) -> tuple[int, str]:
    """Class id from ``id_XXXXXXXX`` and the ``GENDER/Category`` pair of an image name."""
    parts = name.split("/")
    m = _ID.match(parts[3]) if len(parts) >= 5 else None
    if m is None:
        raise InputError(f"{path}:{lineno}: image name {name!r} is not "
                         "img/GENDER/Category/id_XXXXXXXX/file")
    return int(m.group(1)), f"{parts[1]}/{parts[2]}"


def _partition(part_file: Path) -> dict[str, str]:
    """``{image_name: evaluation_status}``; a status other than train/query/gallery is an
    ``InputError`` naming the file, line and value."""
    partition: dict[str, str] = {}
    for lineno, (name, _item, status) in read_numbered_table(
            part_file, 3, 2, (str, str, str), "image_name item_id evaluation_status"):
        if status not in SETS:
            raise InputError(f"{part_file}:{lineno}: unknown evaluation status {status!r} for "
                             f"{name} (expected one of {', '.join(SETS)})")
        partition[str(name)] = str(status)
    return partition


def load_inshop(root: str | Path, strict: bool = False, verify: str = "exists") -> Dataset:
    """Read In-Shop; ``verify`` checks the query and gallery images."""
    base = _root(Path(root))
    bbox_file = base / "Anno" / "list_bbox_inshop.txt"
    rows = read_table(bbox_file, 7, 2, (str, int, int, int, int, int, int),
                      "image_name clothes_type pose_type x_1 y_1 x_2 y_2")
    if not rows:
        raise InputError(f"{bbox_file}: no images listed")
    part_file = first_existing([base / "list_eval_partition.txt",
                                base / "Eval" / "list_eval_partition.txt"],
                               "In-Shop partition list_eval_partition.txt")
    partition = _partition(part_file)
    names = [str(r[0]) for r in rows]
    labels, pairs, subset = [], [], []
    for lineno, name in enumerate(names, start=3):
        cls, pair = _class_and_meta(name, bbox_file, lineno)
        labels.append(cls)
        pairs.append(pair)
        status = partition.get(name)
        if status is None:
            raise InputError(f"{part_file}: no train/query/gallery entry for {name} "
                             f"(listed in {bbox_file}:{lineno})")
        subset.append(status)
    meta_file = base / "meta_classes.txt"
    if meta_file.is_file():
        try:
            meta_names = meta_file.read_text(encoding="utf-8").split()
        except UnicodeDecodeError as exc:
            raise InputError(f"{meta_file}: not a text file (GENDER/Category names): "
                             f"{exc}") from exc
        lookup = {m: i + 1 for i, m in enumerate(meta_names)}
    else:
        meta_names = sorted(set(pairs))
        lookup = {m: i + 1 for i, m in enumerate(meta_names)}
        log.info("%s: no meta_classes.txt, meta-classes are the %d GENDER/Category folders in "
                 "sorted order", base, len(meta_names))
    meta = np.array([lookup.get(p, 0) for p in pairs], dtype=np.int64)
    labels_arr = np.array(labels, dtype=np.int64)
    subset_arr = np.array(subset)
    # the official release unzips Img/img.zip to <root>/Img/img/...; the names start with img/
    image_base = base / "Img" if not (base / "img").is_dir() and (base / "Img" / "img").is_dir() \
        else base
    paths = PathList(image_base, names)
    idx = {s: np.nonzero(subset_arr == s)[0] for s in SETS}
    test_idx = np.concatenate([idx["query"], idx["gallery"]])
    checks = [CountCheck("images", PUBLISHED["images"], len(names)),
              CountCheck("train images", PUBLISHED["train images"], len(idx["train"])),
              CountCheck("query images", PUBLISHED["query images"], len(idx["query"])),
              CountCheck("gallery images", PUBLISHED["gallery images"], len(idx["gallery"])),
              CountCheck("train classes", PUBLISHED["train classes"],
                         number_of_classes(labels_arr[idx["train"]])),
              CountCheck("test classes", PUBLISHED["test classes"],
                         number_of_classes(labels_arr[test_idx])),
              CountCheck("meta-classes", PUBLISHED["meta-classes"], len(meta_names))]
    if len(idx["query"]) == 0 or len(idx["gallery"]) == 0:
        raise InputError(f"{part_file}: needs both query and gallery images, found "
                         f"{len(idx['query'])} and {len(idx['gallery'])}")
    validate_images([paths[i] for i in test_idx], NAME, verify)
    protocol = Protocol(
        name="inshop", family="authors",
        description="authors (evaluate_model.m): query set vs gallery set, nothing excluded",
        splits=(Split(idx["query"], idx["gallery"]),), remove_diag=False, Ks=KS)
    extra = {"clothes_type": np.array([r[1] for r in rows], dtype=np.int64),
             "pose_type": np.array([r[2] for r in rows], dtype=np.int64)}
    return Dataset(name=NAME, root=base, paths=paths, labels=labels_arr, meta=meta,
                   subset=subset_arr, protocols={protocol.name: protocol}, pre_resize=None,
                   extra=extra, count_checks=check_counts(checks, NAME, strict))
