"""Shared builders of the test suite, handed to tests as the session fixture ``build``.

``build`` writes inputs in the real layouts into temporary folders: small JPEGs, datasets in
the official SOP / In-Shop / VehicleID / CUB-200-2011 / Cars196 layouts, and synthetic FastAP
checkpoints (full size, written once per session and family) with their ``McnNet``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from converters.fastap.synthetic import write_synthetic_checkpoint
from converters.mcn.net import McnNet
from converters.mcn.reader import read_network

_NETS: dict[tuple[str, str], McnNet] = {}


def write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 32),
               seed: int | None = None) -> None:
    """A small JPEG: a flat colour, plus noise when ``seed`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty((size[0], size[1], 3), dtype=np.uint8)
    arr[:] = colour
    if seed is not None:
        noise = np.random.default_rng(seed).integers(0, 40, size=arr.shape)
        arr = np.clip(arr.astype(int) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def class_colour(c: int) -> tuple[int, int, int]:
    """A distinct colour per class."""
    return ((60 * c) % 256, (110 + 37 * c) % 256, (200 - 29 * c) % 256)


def write_products(root: Path, classes: int = 3, per_class: int = 3, train_classes: int = 2,
                   identical: bool = False) -> Path:
    """SOP layout: Ebay_train.txt / Ebay_test.txt and <class>_final/<id>.JPG images."""
    lines = {"train": ["image_id class_id super_class_id path"],
             "test": ["image_id class_id super_class_id path"]}
    image_id = 1
    for c in range(1, train_classes + classes + 1):
        part = "train" if c <= train_classes else "test"
        for k in range(per_class):
            rel = f"bicycle_final/{c:03d}_{k}.JPG"
            write_jpeg(root / rel, class_colour(c), seed=None if identical else image_id)
            lines[part].append(f"{image_id} {c} {1 + c % 2} {rel}")
            image_id += 1
    (root / "Ebay_train.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "Ebay_test.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


def write_inshop(root: Path, meta_file: bool = False, eval_folder: bool = False) -> Path:
    """In-Shop layout: Anno/list_bbox_inshop.txt, list_eval_partition.txt, img/... images."""
    items = [("WOMEN/Dresses", 1, "train"), ("MEN/Denim", 2, "query"),
             ("MEN/Denim", 2, "gallery"), ("WOMEN/Dresses", 3, "query"),
             ("WOMEN/Dresses", 3, "gallery"), ("WOMEN/Blouses_Shirts", 4, "gallery")]
    bbox = [str(len(items) * 2), "image_name clothes_type pose_type x_1 y_1 x_2 y_2"]
    part = [str(len(items) * 2), "image_name item_id evaluation_status"]
    for n, (folder, item, status) in enumerate(items):
        for view in range(2):
            rel = f"img/{folder}/id_{item:08d}/{n:02d}_{view + 1}_front.jpg"
            write_jpeg(root / rel, class_colour(item), seed=n * 2 + view)
            bbox.append(f"{rel} 1 {view + 1} 10 10 20 20")
            part.append(f"{rel} id_{item:08d} {status}")
    (root / "Anno").mkdir(parents=True, exist_ok=True)
    (root / "Anno" / "list_bbox_inshop.txt").write_text("\n".join(bbox) + "\n")
    part_dir = root / "Eval" if eval_folder else root
    part_dir.mkdir(parents=True, exist_ok=True)
    (part_dir / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    if meta_file:
        (root / "meta_classes.txt").write_text("MEN/Denim\nWOMEN/Dresses\n")
    return root


def write_vehicleid(root: Path, vehicles: int = 4, per_vehicle: int = 3,
                    identical: bool = False) -> Path:
    """VehicleID layout with a small test_list_800 (all vehicles) and images."""
    (root / "attribute").mkdir(parents=True, exist_ok=True)
    (root / "train_test_split").mkdir(parents=True, exist_ok=True)
    img2vid, test = [], []
    image_id = 10
    for v in range(1, vehicles + 1):
        for _ in range(per_vehicle):
            img2vid.append(f"{image_id:07d} {v}")
            test.append(f"{image_id:07d} {v}")
            write_jpeg(root / "image" / f"{image_id:07d}.jpg", class_colour(v),
                       seed=None if identical else image_id)
            image_id += 1
    (root / "attribute" / "img2vid.txt").write_text("\n".join(img2vid) + "\n")
    (root / "attribute" / "model_attr.txt").write_text("1 5\n2 6\n")
    (root / "attribute" / "color_attr.txt").write_text("1 0\n3 2\n")
    (root / "train_test_split" / "test_list_800.txt").write_text("\n".join(test) + "\n")
    return root


def write_cub(root: Path, counts: dict[int, int] | None = None, images: bool = True,
              identical: bool = False) -> Path:
    """CUB-200-2011 layout: images.txt, image_class_labels.txt and images/<class>/<file>.jpg,
    with ``counts[class]`` images per class (default: classes 1, 2 (train) and 101, 102, 103
    (test), two images each); ``images=False`` writes the two lists only."""
    counts = counts or {1: 2, 2: 2, 101: 2, 102: 2, 103: 2}
    names, labels = [], []
    image_id = 1
    for c, n in counts.items():
        for k in range(n):
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k:04d}.jpg"
            names.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            if images:
                write_jpeg(root / "images" / rel, class_colour(c),
                           seed=None if identical else image_id)
            image_id += 1
    root.mkdir(parents=True, exist_ok=True)
    (root / "images.txt").write_text("\n".join(names) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def write_cars(root: Path, counts: dict[int, int] | None = None, images: bool = True,
               identical: bool = False, version: str = "7") -> Path:
    """Cars196 layout: cars_annos.mat (``annotations`` struct array with relative_im_path,
    bbox, class, test) and car_ims/NNNNNN.jpg, ``counts[class]`` images per class (default:
    classes 1, 2 (train) and 99, 100, 101 (test), two images each)."""
    from converters.matio.write import save_mat

    counts = counts or {1: 2, 2: 2, 99: 2, 100: 2, 101: 2}
    annotations = []
    image_id = 1
    for c, n in counts.items():
        for _ in range(n):
            rel = f"car_ims/{image_id:06d}.jpg"
            if images:
                write_jpeg(root / rel, class_colour(c), seed=None if identical else image_id)
            annotations.append({
                "relative_im_path": rel,
                "bbox_x1": np.array([[1.0]]), "bbox_y1": np.array([[2.0]]),
                "bbox_x2": np.array([[20.0]]), "bbox_y2": np.array([[18.0]]),
                "class": np.array([[c]], dtype=np.uint8 if c < 256 else np.uint16),
                "test": np.array([[image_id % 2]], dtype=np.uint8)})
            image_id += 1
    root.mkdir(parents=True, exist_ok=True)
    save_mat(root / "cars_annos.mat",
             {"annotations": annotations,
              "class_names": tuple(f"Car {c}" for c in range(1, max(counts) + 1))},
             version=version)
    return root


def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory, family: str,
                         version: str = "7") -> Path:
    """The session's synthetic checkpoint of ``family`` (written on first use)."""
    folder = tmp_path_factory.getbasetemp() / "fastap_checkpoints" / f"{family}-v{version}"
    path = folder / "net-epoch-3.mat"
    if not path.exists():
        write_synthetic_checkpoint(path, family, dim=512, epoch=3, with_state=False,
                                   version=version, compress=False)
    return path


def synthetic_net(tmp_path_factory: pytest.TempPathFactory, family: str,
                  version: str = "7") -> McnNet:
    """The session's checkpoint of ``family`` read back as an ``McnNet`` (cached)."""
    key = (family, version)
    if key not in _NETS:
        _NETS[key] = read_network(synthetic_checkpoint(tmp_path_factory, family, version))
    return _NETS[key]


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The builders: ``jpeg``, ``colour``, ``products``, ``inshop``, ``vehicleid``, ``cub``,
    ``cars``, ``checkpoint(family, version)`` and ``net(family, version)``."""
    return SimpleNamespace(
        jpeg=write_jpeg, colour=class_colour, products=write_products, inshop=write_inshop,
        vehicleid=write_vehicleid, cub=write_cub, cars=write_cars,
        checkpoint=lambda family, version="7": synthetic_checkpoint(tmp_path_factory, family,
                                                                   version),
        net=lambda family, version="7": synthetic_net(tmp_path_factory, family, version),
    )
