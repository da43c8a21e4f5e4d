"""Reading .mat files into the plain tree: format detection, v5 and v7.3 pitfalls, bad input.

Facts checked against the real MATLAB-written files in tests/fixtures/realfiles/mat
(MANIFEST.md there) and against raw scipy/h5py views of the same bytes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from converters.errors import MatConvNetError
from converters.matio.read import list_variables, load_mat, mat_format
from tests import REALFILES

MAT = REALFILES / "mat"
LAPSRN = MAT / "dagnn_v5_LapSRN_x2.mat"
MNIST = MAT / "dagnn_v5_struct_mnist_new_net.mat"
DNCNN = MAT / "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat"
ONECLICK = MAT / "simplenn_v5_ckpt_oneclick_net-epoch-50.mat"


@pytest.mark.parametrize("path", sorted(MAT.glob("*.mat")), ids=lambda p: p.name)
def test_format_matches_the_manifest(path: Path) -> None:
    expected = "v7.3" if path.name.startswith("dagnn_v73") else "v5"
    assert mat_format(path) == expected


def test_format_comes_from_the_header_not_the_name(tmp_path: Path) -> None:
    disguised = tmp_path / "looks_like_v5.txt"
    shutil.copy(DNCNN, disguised)
    assert mat_format(disguised) == "v7.3"
    assert load_mat(disguised)["net"]["layers"][0]["name"] == "conv1"


def test_v4_files_are_read_as_v5(tmp_path: Path) -> None:
    path = tmp_path / "old.mat"
    scipy.io.savemat(path, {"a": np.array([[1.0, 2.0], [3.0, 4.0]])}, format="4")
    assert mat_format(path) == "v5"
    np.testing.assert_array_equal(load_mat(path)["a"], [[1.0, 2.0], [3.0, 4.0]])


def test_list_variables_without_reading_data() -> None:
    assert list_variables(MNIST) == {
        "vars": ((1, 10), "struct"), "params": ((1, 8), "struct"),
        "layers": ((1, 8), "struct"), "meta": ((0, 0), "double"),
    }
    assert list_variables(DNCNN) == {"net": ((1, 1), "struct")}
    assert set(list_variables(ONECLICK)) == {"net", "state", "stats"}


def test_only_requested_variables_are_loaded() -> None:
    assert set(load_mat(ONECLICK, ["net", "stats"])) == {"net", "stats"}
    assert set(load_mat(ONECLICK, ["net", "no_such_variable"])) == {"net"}


# ---------------------------------------------------------------- v5 pitfalls (real file)

def test_v5_integer_valued_doubles_come_back_as_float64() -> None:
    # MATLAB stored block.size/hasBias compacted: plain scipy shows uint8.
    raw = scipy.io.loadmat(LAPSRN)["net"]["layers"][0, 0][0, 0]["block"][0, 0]
    assert raw["size"].dtype == np.uint8
    block = load_mat(LAPSRN)["net"]["layers"][0]["block"]
    assert block["size"].dtype == np.float64
    np.testing.assert_array_equal(block["size"], [[3, 3, 1, 64]])
    assert block["pad"].shape == (1, 4)


def test_v5_logicals_are_bool() -> None:
    net = load_mat(LAPSRN)["net"]
    assert net["layers"][0]["block"]["hasBias"].dtype == bool
    assert net["layers"][0]["block"]["hasBias"].shape == (1, 1)
    assert net["vars"][0]["precious"].dtype == bool


def test_v5_one_element_cells_stay_lists() -> None:
    # squeeze_me would turn {'LR'} into 'LR'
    squeezed = scipy.io.loadmat(LAPSRN, squeeze_me=True)["net"]["layers"].item()[0]["inputs"]
    assert squeezed == "LR"
    layer = load_mat(LAPSRN)["net"]["layers"][0]
    assert layer["inputs"] == ["LR"]
    assert layer["block"]["opts"] == ["cuDNN"]


def test_v5_fieldless_struct_is_empty_dict() -> None:
    layers = load_mat(LAPSRN)["net"]["layers"]
    sums = [layer for layer in layers if layer["type"] == "dagnn.Sum"]
    assert len(sums) == 1
    assert sums[0]["block"] == {}


def test_v5_empty_meta_and_struct_arrays() -> None:
    tree = load_mat(MNIST)
    assert isinstance(tree["meta"], np.ndarray)
    assert tree["meta"].shape == (0, 0) and tree["meta"].dtype == np.float64
    assert isinstance(tree["layers"], list) and len(tree["layers"]) == 8
    assert [p["name"] for p in tree["params"]][:2] == ["filters1", "biases1"]
    assert tree["params"][0]["value"].dtype == np.float32
    assert tree["params"][0]["value"].shape == (5, 5, 1, 20)


def test_v5_stats_struct_array_in_column_major_order() -> None:
    stats = load_mat(ONECLICK, ["stats"])["stats"]
    raw = scipy.io.loadmat(ONECLICK, variable_names=["stats"])["stats"][0, 0]["train"]
    assert len(stats["train"]) == raw.size == 50
    for epoch in (0, 17, 49):
        assert stats["train"][epoch]["objective"][0, 0] == raw[0, epoch]["objective"][0, 0]


# ---------------------------------------------------------------- v7.3 pitfalls (real file)

def test_v73_dims_are_reversed_back_to_matlab_order() -> None:
    net = load_mat(DNCNN)["net"]
    filters = net["params"][0]["value"]
    assert net["params"][0]["name"] == "conv1_f"
    assert filters.shape == (3, 3, 1, 64) and filters.dtype == np.float32
    with h5py.File(DNCNN, "r") as handle:
        ref = handle["net/params/value"][0, 0]
        raw = handle[ref][()]
    assert raw.shape == (64, 1, 3, 3)
    assert filters[2, 1, 0, 5] == raw[5, 0, 1, 2]


def test_v73_chars_cells_logicals_and_empties() -> None:
    net = load_mat(DNCNN)["net"]
    first = net["layers"][0]
    assert (first["name"], first["type"]) == ("conv1", "dagnn.Conv")
    assert first["inputs"] == ["input"] and first["params"] == ["conv1_f", "conv1_b"]
    assert first["block"]["hasBias"].dtype == bool and bool(first["block"]["hasBias"][0, 0])
    np.testing.assert_array_equal(first["block"]["pad"], [[1, 1, 1, 1]])
    assert net["meta"].shape == (0, 0)
    relu = net["layers"][1]
    assert relu["block"]["opts"] == []  # an empty cell (MATLAB_empty)
    assert len(net["vars"]) == 52 and net["vars"][0]["precious"].dtype == bool


def test_v73_fieldless_struct_held_as_empty_marker() -> None:
    layers = load_mat(DNCNN)["net"]["layers"]
    sums = [layer for layer in layers if layer["type"] == "dagnn.Sum"]
    assert [s["name"] for s in sums] == ["sum49"]
    assert sums[0]["block"] == {}
    with h5py.File(DNCNN, "r") as handle:
        refs = handle["net/layers/block"][()].ravel()
        node = handle[refs[[layer["name"] for layer in layers].index("sum49")]]
        assert node.attrs["MATLAB_class"] == b"struct"
        assert node.attrs["MATLAB_empty"] == 1
        np.testing.assert_array_equal(node[()], [1, 1])


def _write_mcos_file(path: Path) -> None:
    """A v7.3 file with a numeric variable and an MCOS object pointing into #subsystem#."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset("x", data=np.array([[1.0, 2.0, 3.0]]).T)
        handle["x"].attrs["MATLAB_class"] = np.bytes_(b"double")
        obj = handle.create_dataset("s", data=np.array([[3707764736], [2], [1], [1], [1], [1]],
                                                       dtype=np.uint32))
        obj.attrs["MATLAB_class"] = np.bytes_(b"string")
        obj.attrs["MATLAB_object_decode"] = np.int32(3)
        handle.create_group("#subsystem#").create_dataset("MCOS", data=np.zeros(2))
    with open(path, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")


def test_v73_mcos_objects_and_subsystem_are_skipped(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mcos.mat"
    _write_mcos_file(path)
    with caplog.at_level(logging.WARNING, logger="converters.matio.v73"):
        tree = load_mat(path)
    assert set(tree) == {"x", "s"}
    np.testing.assert_array_equal(tree["x"], [[1.0, 2.0, 3.0]])
    assert tree["s"] is None
    assert "string" in caplog.text
    assert list_variables(path) == {"x": ((1, 3), "double"), "s": ((1, 6), "string")}


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("source", [LAPSRN, DNCNN], ids=["v5", "v7.3"])
def test_truncated_file_is_a_clear_error(tmp_path: Path, source: Path) -> None:
    cut = tmp_path / "cut.mat"
    data = source.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MatConvNetError, match="cut.mat"):
        load_mat(cut)


def test_text_file_named_mat_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mat"
    fake.write_text("these are my notes, not a MATLAB file\n" * 10)
    with pytest.raises(MatConvNetError, match="notes.mat.*not a MATLAB"):
        mat_format(fake)
    with pytest.raises(MatConvNetError, match="notes.mat"):
        load_mat(fake)


@pytest.mark.parametrize("content", [b"", b"MATLAB", b"\0\0\0\0junk",
                                     b"MATLAB 5.0 MAT-file" + b"\0" * 40],
                         ids=["empty", "short", "zeros", "header-cut"])
def test_tiny_or_zero_headed_files_are_clear_errors(tmp_path: Path, content: bytes) -> None:
    fake = tmp_path / "tiny.mat"
    fake.write_bytes(content)
    with pytest.raises(MatConvNetError, match="tiny.mat"):
        load_mat(fake)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        load_mat(tmp_path / "absent.mat")


def test_sparse_matrices_load_dense(tmp_path: Path) -> None:
    dense = np.array([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    v5 = tmp_path / "sparse5.mat"
    scipy.io.savemat(v5, {"s": scipy.sparse.csc_matrix(dense)})
    np.testing.assert_array_equal(load_mat(v5)["s"], dense)
    v73 = tmp_path / "sparse73.mat"
    with h5py.File(v73, "w", userblock_size=512) as handle:  # MATLAB's layout: CSC arrays
        group = handle.create_group("s")
        group.attrs["MATLAB_class"] = np.bytes_(b"double")
        group.attrs["MATLAB_sparse"] = np.uint64(3)
        group.create_dataset("data", data=np.array([3.0, 2.0]))
        group.create_dataset("ir", data=np.array([1, 0], dtype=np.uint64))
        group.create_dataset("jc", data=np.array([0, 1, 2], dtype=np.uint64))
    with open(v73, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    np.testing.assert_array_equal(load_mat(v73)["s"], dense)
    assert list_variables(v73) == {"s": ((3, 2), "double")}
