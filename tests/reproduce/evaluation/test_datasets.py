"""Dataset readers on synthetic datasets in the real layouts, and the real VehicleID files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from reproduce.errors import InputError
from reproduce.evaluation.datasets import (
    Dataset,
    load_dataset,
    load_inshop,
    load_products,
    load_vehicleid,
)
from reproduce.evaluation.datasets.vehicleid import reid_splits
from reproduce.evaluation.preprocess import read_rgb
from tests import REALFILES

REAL_VID = REALFILES / "vehicleid"


# ---------------------------------------------------------------------------- products


def test_products_reads_layout_in_file_order(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture,
                                             build: SimpleNamespace) -> None:
    build.products(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_products(tmp_path)
    assert len(ds) == 15
    assert ds.subset.tolist() == ["train"] * 6 + ["test"] * 9
    assert ds.labels[6:].tolist() == [3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert ds.paths[6] == tmp_path / "bicycle_final" / "003_0.JPG"
    prot = ds.protocols["products"]
    assert prot.remove_diag and prot.Ks == (1, 10, 100, 1000)
    assert prot.splits[0].query.tolist() == list(range(6, 15))
    assert prot.splits[0].database.tolist() == list(range(6, 15))
    assert ds.pre_resize == (256, 256)
    # tiny synthetic data: every published count mismatches, reported as warnings
    assert not any(c.ok for c in ds.count_checks if c.what.startswith("test"))
    assert "test images: found 9, published 60502 (MISMATCH)" in caplog.text


def test_products_strict_counts_raise(tmp_path: Path, build: SimpleNamespace) -> None:
    build.products(tmp_path)
    with pytest.raises(InputError, match="counts differ.*test images: found 9"):
        load_products(tmp_path, strict=True)


def test_products_parent_folder_accepted(tmp_path: Path, build: SimpleNamespace) -> None:
    build.products(tmp_path / "Stanford_Online_Products")
    assert len(load_dataset("products", tmp_path)) == 15


def test_products_missing_list_names_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Ebay_test.txt"):
        load_products(tmp_path)


def test_products_missing_image_named(tmp_path: Path, build: SimpleNamespace) -> None:
    build.products(tmp_path)
    gone = tmp_path / "bicycle_final" / "004_1.JPG"
    gone.unlink()
    with pytest.raises(InputError, match="1 of 9 images missing: .*004_1.JPG"):
        load_products(tmp_path)
    assert len(load_products(tmp_path, verify="none")) == 15


def test_products_wrong_layout_names_line(tmp_path: Path, build: SimpleNamespace) -> None:
    build.products(tmp_path)
    with (tmp_path / "Ebay_test.txt").open("a") as fh:
        fh.write("99 notanumber 1 x.JPG\n")
    with pytest.raises(InputError, match=r"Ebay_test.txt:11: bad value"):
        load_products(tmp_path)
    (tmp_path / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n1 2\n")
    with pytest.raises(InputError, match=r"Ebay_test.txt:2: expected 4 fields"):
        load_products(tmp_path)


def test_corrupt_image_named(tmp_path: Path, build: SimpleNamespace) -> None:
    build.products(tmp_path)
    bad = tmp_path / "bicycle_final" / "005_2.JPG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(InputError, match="unreadable: .*005_2.JPG"):
        load_products(tmp_path, verify="decode")
    with pytest.raises(InputError, match="005_2.JPG: cannot read image"):
        read_rgb(bad)


# ---------------------------------------------------------------------------- In-Shop


def test_inshop_layout_sets_and_folder_meta_classes(tmp_path: Path,
                                                    build: SimpleNamespace) -> None:
    build.inshop(tmp_path)
    ds = load_inshop(tmp_path)
    assert len(ds) == 12
    prot = ds.protocols["inshop"]
    assert not prot.remove_diag and prot.Ks == (1, 10, 20, 30, 40, 50)
    assert ds.subset[prot.splits[0].query].tolist() == ["query"] * 4
    assert prot.splits[0].query.tolist() == [2, 3, 6, 7]
    assert prot.splits[0].database.tolist() == [4, 5, 8, 9, 10, 11]
    assert ds.labels.tolist() == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4]
    # no meta_classes.txt: sorted folder pairs MEN/Denim, WOMEN/Blouses_Shirts, WOMEN/Dresses
    assert ds.meta.tolist() == [3, 3, 1, 1, 1, 1, 3, 3, 3, 3, 2, 2]
    assert ds.pre_resize is None


def test_inshop_meta_classes_file_and_eval_folder(tmp_path: Path, build: SimpleNamespace) -> None:
    build.inshop(tmp_path, meta_file=True, eval_folder=True)
    ds = load_inshop(tmp_path)
    # MEN/Denim = 1, WOMEN/Dresses = 2, WOMEN/Blouses_Shirts not listed = 0 (ismember)
    assert ds.meta.tolist() == [2, 2, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]


def test_inshop_official_layout_with_images_under_img_folder(tmp_path: Path,
                                                             build: SimpleNamespace) -> None:
    build.inshop(tmp_path, eval_folder=True)
    (tmp_path / "Img").mkdir()
    shutil.move(tmp_path / "img", tmp_path / "Img" / "img")
    ds = load_inshop(tmp_path, verify="decode")
    assert ds.paths[0] == tmp_path / "Img" / "img" / "WOMEN" / "Dresses" / "id_00000001" / \
        "00_1_front.jpg"


def test_inshop_bad_name_and_missing_partition(tmp_path: Path, build: SimpleNamespace) -> None:
    build.inshop(tmp_path)
    bbox = tmp_path / "Anno" / "list_bbox_inshop.txt"
    with bbox.open("a") as fh:
        fh.write("img/WOMEN/Dresses/00_1_front.jpg 1 1 1 1 2 2\n")
    with pytest.raises(InputError, match=r"list_bbox_inshop.txt:15: image name"):
        load_inshop(tmp_path)
    lines = bbox.read_text().splitlines()[:-1]
    lines.append("img/WOMEN/Dresses/id_00000009/00_1_front.jpg 1 1 1 1 2 2")
    bbox.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="no train/query/gallery entry for img/WOMEN/Dresses/"
                                         "id_00000009"):
        load_inshop(tmp_path)
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(InputError, match="list_eval_partition.txt"):
        load_inshop(tmp_path)


def test_inshop_status_typo_named_with_line_and_value(tmp_path: Path,
                                                     build: SimpleNamespace) -> None:
    # a typo such as "quer" used to be reported as a missing entry for the image
    build.inshop(tmp_path)
    part = tmp_path / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    lines[4] = lines[4].replace(" query", " quer")  # line 5: the first query image
    assert lines[4].endswith(" quer")
    part.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"list_eval_partition.txt:5: unknown evaluation "
                                         r"status 'quer' for img/MEN/Denim/id_00000002/"):
        load_inshop(tmp_path)


# ---------------------------------------------------------------------------- VehicleID


@pytest.fixture(scope="module")
def real_vid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real annotation files placed in the VehicleID_V1.0 layout (no images)."""
    root = tmp_path_factory.mktemp("vid") / "VehicleID_V1.0"
    (root / "attribute").mkdir(parents=True)
    (root / "train_test_split").mkdir()
    for name in ("img2vid.txt", "model_attr.txt", "color_attr.txt"):
        shutil.copy(REAL_VID / name, root / "attribute" / name)
    shutil.copy(REAL_VID / "test_list_800.txt", root / "train_test_split" / "test_list_800.txt")
    return root


@pytest.fixture(scope="module")
def real_vid_ds(real_vid: Path) -> Dataset:
    """The real files loaded once (strict: any count mismatch would raise)."""
    return load_vehicleid(real_vid.parent, sizes=("small",), strict=True, verify="none")


def test_real_vehicleid_files_load_with_published_counts(real_vid: Path,
                                                         real_vid_ds: Dataset) -> None:
    ds = real_vid_ds
    assert len(ds) == 221567
    assert len(np.unique(ds.labels)) == 26328
    checks = {c.what: (c.found, c.expected) for c in ds.count_checks}
    assert checks["small test vehicles"] == (800, 800)
    assert checks["small test images"] == (6493, 6493)
    authors = ds.protocols["vid-small-authors"]
    members = authors.splits[0].query
    assert len(members) == 6493 and authors.remove_diag and authors.Ks == (1, 5)
    assert np.array_equal(members, authors.splits[0].database)
    # first line of img2vid.txt is image 0287057 of vehicle 24405
    assert ds.paths[0] == real_vid / "image" / "0287057.jpg"
    assert ds.labels[0] == 24405


def test_real_vehicleid_meta_column_mirrors_vid_m(real_vid_ds: Dataset) -> None:
    ds = real_vid_ds
    # vehicle 1: model_attr "1 237", color_attr "1 2": MATLAB's column 2 ends up colour + 1
    one = np.nonzero(ds.labels == 1)[0]
    assert len(one) > 0
    assert set(ds.meta[one].tolist()) == {3}
    assert set(ds.extra["model"][one].tolist()) == {238}
    assert set(ds.extra["color"][one].tolist()) == {3}


def test_real_vehicleid_reid_protocol(real_vid_ds: Dataset) -> None:
    ds = real_vid_ds
    reid = ds.protocols["vid-small-reid"]
    members = ds.protocols["vid-small-authors"].splits[0].query
    assert reid.family == "reid" and not reid.remove_diag and len(reid.splits) == 10
    galleries = []
    for split in reid.splits:
        assert len(split.database) == 800
        assert len(np.unique(ds.labels[split.database])) == 800
        assert len(np.intersect1d(split.query, split.database)) == 0
        assert np.array_equal(np.union1d(split.query, split.database), members)
        galleries.append(split.database)
    assert not all(np.array_equal(galleries[0], g) for g in galleries[1:])
    # draws are seeded: the same seed gives the same galleries
    again = reid_splits(ds.labels, members, draws=4, seed=0)
    assert np.array_equal(again[3].database, galleries[3])


def test_vehicleid_missing_split_file_named(real_vid: Path) -> None:
    with pytest.raises(InputError, match="img2vid.txt"):
        load_vehicleid(real_vid / "attribute")
    small = real_vid / "train_test_split" / "test_list_800.txt"
    tiny = real_vid.parent / "tiny"
    (tiny / "attribute").mkdir(parents=True)
    (tiny / "train_test_split").mkdir()
    lines = (real_vid / "attribute" / "img2vid.txt").read_text().splitlines()[:50]
    (tiny / "attribute" / "img2vid.txt").write_text("\n".join(lines) + "\n")
    for name in ("model_attr.txt", "color_attr.txt"):
        shutil.copy(real_vid / "attribute" / name, tiny / "attribute" / name)
    shutil.copy(small, tiny / "train_test_split" / "test_list_800.txt")
    with pytest.raises(InputError, match="test_list_1600.txt: missing"):
        load_vehicleid(tiny, sizes=("small", "medium"), verify="none")


def test_vehicleid_synthetic_images_checked(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture,
                                            build: SimpleNamespace) -> None:
    build.vehicleid(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_vehicleid(tmp_path)  # default: the splits whose list files exist
    assert sorted(ds.protocols) == ["vid-small-authors", "vid-small-reid"]
    assert "test_list_1600.txt" in caplog.text
    assert len(ds) == 12
    assert ds.meta.tolist() == [1] * 3 + [7] * 3 + [3] * 3 + [0] * 3
    (tmp_path / "image" / "0000015.jpg").unlink()
    with pytest.raises(InputError, match="0000015.jpg"):
        load_vehicleid(tmp_path, sizes=("small",))


def test_unknown_dataset() -> None:
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("cifar", ".")


def test_vehicleid_empty_train_list_is_a_count_mismatch(tmp_path: Path,
                                                        build: SimpleNamespace) -> None:
    # an empty train_list.txt used to crash with an IndexError (a traceback from the CLI)
    build.vehicleid(tmp_path)
    (tmp_path / "train_test_split" / "train_list.txt").write_text("")
    ds = load_vehicleid(tmp_path, sizes=("small",), verify="none")
    checks = {c.what: c.found for c in ds.count_checks}
    assert checks["train vehicles"] == 0 and checks["train images"] == 0
    with pytest.raises(InputError, match="train vehicles: found 0"):
        load_vehicleid(tmp_path, sizes=("small",), strict=True, verify="none")


def test_inshop_binary_meta_classes_file_named(tmp_path: Path, build: SimpleNamespace) -> None:
    build.inshop(tmp_path)
    (tmp_path / "meta_classes.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match=r"meta_classes.txt: not a text file"):
        load_inshop(tmp_path)
