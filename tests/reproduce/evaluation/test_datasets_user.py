"""CUB-200-2011, Cars196 and image-list readers on tiny datasets in their layouts."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from reproduce.errors import InputError
from reproduce.evaluation.datasets import load_cars, load_cub, load_dataset, load_list

# ---------------------------------------------------------------------------- CUB


def test_cub_layout_class_split_and_protocol(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             build: SimpleNamespace) -> None:
    build.cub(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_cub(tmp_path)
    assert len(ds) == 10
    assert ds.labels.tolist() == [1, 1, 2, 2, 101, 101, 102, 102, 103, 103]
    assert ds.subset.tolist() == ["train"] * 4 + ["test"] * 6
    assert ds.paths[4] == tmp_path / "images" / "101.Bird_101" / "Bird_101_0000.jpg"
    prot = ds.protocols["cub"]
    assert prot.remove_diag and prot.Ks == (1, 2, 4, 8, 16, 32) and prot.family == "authors"
    assert prot.splits[0].query.tolist() == [4, 5, 6, 7, 8, 9]
    assert prot.splits[0].database.tolist() == [4, 5, 6, 7, 8, 9]
    assert ds.pre_resize == (256, 256) and ds.meta.tolist() == [0] * 10
    assert "test images: found 6, published 5924 (MISMATCH)" in caplog.text
    with pytest.raises(InputError, match="counts differ.*test images: found 6"):
        load_cub(tmp_path, strict=True)
    # the folder holding CUB_200_2011/ is accepted, and the registry knows "cub"
    parent = tmp_path.parent / "parent"
    shutil.copytree(tmp_path, parent / "CUB_200_2011")
    assert len(load_dataset("cub", parent)) == 10


def test_cub_published_counts_pass_strict(tmp_path: Path, build: SimpleNamespace) -> None:
    # 5,864 train images in classes 1-100 and 5,924 test images in 101-200 (the lists only)
    counts = {c: 59 if c <= 64 else 58 for c in range(1, 101)}
    counts.update({c: 60 if c <= 124 else 59 for c in range(101, 201)})
    build.cub(tmp_path, counts, images=False)
    ds = load_cub(tmp_path, strict=True, verify="none")
    assert all(c.ok for c in ds.count_checks) and len(ds.count_checks) == 5
    assert len(ds.protocols["cub"].splits[0].query) == 5924


def test_cub_bad_input_named(tmp_path: Path, build: SimpleNamespace) -> None:
    build.cub(tmp_path)
    labels = tmp_path / "image_class_labels.txt"
    good = labels.read_text()
    labels.write_text("\n".join(good.splitlines()[:-1]) + "\n")  # image 10 has no class
    with pytest.raises(InputError, match=r"image_class_labels.txt: no class for image 10 "
                                         r"\(listed in .*images.txt:10\)"):
        load_cub(tmp_path)
    labels.write_text(good + "11\n")
    with pytest.raises(InputError, match=r"image_class_labels.txt:11: expected 2 fields"):
        load_cub(tmp_path)
    labels.write_text(good)
    (tmp_path / "images" / "102.Bird_102" / "Bird_102_0001.jpg").unlink()
    with pytest.raises(InputError, match="1 of 6 images missing: .*Bird_102_0001.jpg"):
        load_cub(tmp_path)
    labels.unlink()
    with pytest.raises(InputError, match="image_class_labels.txt: missing"):
        load_cub(tmp_path)
    with pytest.raises(InputError, match="images.txt"):
        load_cub(tmp_path / "images")


# ---------------------------------------------------------------------------- Cars196


def test_cars_layout_class_split_and_protocol(tmp_path: Path, build: SimpleNamespace) -> None:
    build.cars(tmp_path)
    ds = load_dataset("cars", tmp_path)
    assert len(ds) == 10
    assert ds.labels.tolist() == [1, 1, 2, 2, 99, 99, 100, 100, 101, 101]
    assert ds.subset.tolist() == ["train"] * 4 + ["test"] * 6
    assert ds.paths[0] == tmp_path / "car_ims" / "000001.jpg"
    assert ds.extra["test_flag"].tolist() == [1, 0] * 5  # kept, not used for the split
    prot = ds.protocols["cars"]
    assert prot.remove_diag and prot.Ks == (1, 2, 4, 8, 16, 32)
    assert prot.splits[0].query.tolist() == [4, 5, 6, 7, 8, 9]
    with pytest.raises(InputError, match="counts differ.*test images: found 6, published 8131"):
        load_cars(tmp_path, strict=True)


def test_cars_v73_annotations(tmp_path: Path, build: SimpleNamespace) -> None:
    build.cars(tmp_path, version="7.3", images=False)
    ds = load_cars(tmp_path, verify="none")
    assert ds.labels.tolist() == [1, 1, 2, 2, 99, 99, 100, 100, 101, 101]


def test_cars_published_counts_pass_strict(tmp_path: Path, build: SimpleNamespace) -> None:
    # 8,054 train images in classes 1-98 and 8,131 test images in 99-196 (annotations only)
    counts = {c: 83 if c <= 18 else 82 for c in range(1, 99)}
    counts.update({c: 83 if c <= 193 else 82 for c in range(99, 197)})
    build.cars(tmp_path, counts, images=False)
    ds = load_cars(tmp_path, strict=True, verify="none")
    assert all(c.ok for c in ds.count_checks) and len(ds) == 16185


def test_cars_bad_input_named(tmp_path: Path, build: SimpleNamespace) -> None:
    from converters.matio.write import save_mat

    with pytest.raises(InputError, match="cars_annos.mat: missing"):
        load_cars(tmp_path)
    annos = tmp_path / "cars_annos.mat"
    annos.write_bytes(b"this is not a MAT file at all, just some text")
    with pytest.raises(InputError, match="cars_annos.mat: cannot read the annotations"):
        load_cars(tmp_path)
    entry = {"relative_im_path": "car_ims/000001.jpg", "test": np.array([[0]], np.uint8)}
    save_mat(annos, {"annotations": [entry, dict(entry)]})
    with pytest.raises(InputError, match=r"cars_annos.mat: annotations\(1\) has no field "
                                         r"class"):
        load_cars(tmp_path)
    save_mat(annos, {"class_names": ("a", "b")})
    with pytest.raises(InputError, match="no 'annotations' struct array"):
        load_cars(tmp_path)
    build.cars(tmp_path)
    (tmp_path / "car_ims" / "000007.jpg").unlink()
    with pytest.raises(InputError, match="1 of 6 images missing: .*000007.jpg"):
        load_cars(tmp_path)


# ---------------------------------------------------------------------------- image list


def _images(root: Path, build: SimpleNamespace, n: int = 8) -> list[str]:
    """``n`` small JPEGs under ``root/img``; their paths relative to ``root``."""
    rel = []
    for i in range(n):
        build.jpeg(root / "img" / f"{i}.jpg", build.colour(i // 2), seed=i)
        rel.append(f"img/{i}.jpg")
    return rel


def test_list_csv_with_splits(tmp_path: Path, build: SimpleNamespace) -> None:
    rel = _images(tmp_path, build)
    lines = ["Path,Class,superclass,split",
             f"{rel[0]},7,1,train", f"{rel[1]},7,1,train",
             f"{rel[2]},3,2,test", f"{rel[3]},3,2,test",
             f"{rel[4]},5,2,query", f"{rel[5]},5,2,gallery",
             "", f"{rel[6]},6,1,query", f"{rel[7]},6,1,GALLERY"]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset("list", None, list_file=tmp_path / "list.csv")
    assert ds.root == tmp_path and ds.paths[2] == tmp_path / "img" / "2.jpg"
    assert ds.labels.tolist() == [7, 7, 3, 3, 5, 5, 6, 6]
    assert ds.meta.tolist() == [1, 1, 2, 2, 2, 2, 1, 1]
    assert ds.extra["line"].tolist() == [2, 3, 4, 5, 6, 7, 9, 10]
    test = ds.protocols["list-test"]
    assert test.remove_diag and test.splits[0].query.tolist() == [2, 3]
    assert test.Ks == (1, 2, 4, 8, 16, 32)
    qg = ds.protocols["list-query-gallery"]
    assert not qg.remove_diag and qg.Ks == (1, 10, 20, 30, 40, 50)
    assert qg.splits[0].query.tolist() == [4, 6] and qg.splits[0].database.tolist() == [5, 7]
    assert ds.count_checks == []


def test_list_text_without_split_and_named_classes(tmp_path: Path,
                                                   build: SimpleNamespace) -> None:
    rel = _images(tmp_path / "data", build, n=4)
    lines = ["path class", f"{rel[0]} Albatross", f"{rel[1]} Albatross", f"{rel[2]} Wren",
             f"{rel[3]} Albatross"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    ds = load_list(tmp_path / "data", list_file=tmp_path / "list.txt")
    # names are numbered by first appearance; every image is a test image
    assert ds.labels.tolist() == [1, 1, 2, 1] and ds.meta.tolist() == [0] * 4
    assert sorted(ds.protocols) == ["list-test"]
    assert ds.protocols["list-test"].splits[0].query.tolist() == [0, 1, 2, 3]


def test_list_csv_from_a_spreadsheet_with_byte_order_mark(tmp_path: Path,
                                                          build: SimpleNamespace) -> None:
    rel = _images(tmp_path, build, n=2)
    (tmp_path / "l.csv").write_bytes(
        f"\ufeffpath,class\r\n\"{rel[0]}\",1\r\n{rel[1]},1\r\n".encode())
    ds = load_list(list_file=tmp_path / "l.csv")
    assert ds.paths[0] == tmp_path / "img" / "0.jpg" and ds.labels.tolist() == [1, 1]


@pytest.mark.parametrize("name,lines,message", [
    ("l.txt", ["file label", "img/0.jpg 1"], r"l.txt:1: the header names no path or class"),
    ("l.txt", ["path", "img/0.jpg"], r"l.txt:1: the header names no class column"),
    ("l.txt", ["path class", "img/0.jpg 1", "img/1.jpg"], r"l.txt:3: expected 2 fields"),
    ("l.txt", ["path class split", "img/0.jpg 1 test", "img/1.jpg 1 tset"],
     r"l.txt:3: unknown split value 'tset'"),
    ("l.csv", ["path,class", "img/0.jpg,1", "img/1.jpg,"], r"l.csv:3: empty class field"),
    ("l.csv", ["path,class,split", "img/0.jpg,1,query", "img/1.jpg,1,query"],
     r"l.csv: needs both query and gallery images, found 2 and 0"),
    ("l.csv", ["path,class,split", "img/0.jpg,1,train"], "no test, query or gallery image"),
    ("l.csv", ["path,class", "img/0.jpg,1", "img/missing.jpg,1"],
     r"l.csv:3: 1 of 2 images missing: line 3: .*missing.jpg"),
    ("l.csv", [], r"l.csv: empty"),
    ("l.csv", ["path,class"], r"l.csv: no images listed"),
    ("l.csv", ["path,class,class", "img/0.jpg,1,1"], "column class named twice"),
])
def test_list_bad_input_names_file_and_line(tmp_path: Path, build: SimpleNamespace, name: str,
                                            lines: list[str], message: str) -> None:
    _images(tmp_path, build, n=2)
    (tmp_path / name).write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(InputError, match=message):
        load_list(list_file=tmp_path / name)


def test_list_extra_column_warned_and_missing_list(tmp_path: Path, build: SimpleNamespace,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    _images(tmp_path, build, n=2)
    (tmp_path / "l.csv").write_text("path,class,spilt\nimg/0.jpg,1,test\nimg/1.jpg,1,test\n")
    with caplog.at_level(logging.WARNING):
        ds = load_list(list_file=tmp_path / "l.csv")
    assert "l.csv:1: ignoring column(s) spilt" in caplog.text
    assert len(ds) == 2
    with pytest.raises(InputError, match="needs an image list"):
        load_list(tmp_path)
    with pytest.raises(InputError, match="absent.csv: missing"):
        load_list(list_file=tmp_path / "absent.csv")
