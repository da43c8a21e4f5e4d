"""Writing plain trees as MAT v7 and v7.3: round trips, MATLAB's v7.3 layout, atomic writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.io

from converters.errors import MatConvNetError
from converters.matio.read import list_variables, load_mat, mat_format
from converters.matio.write import save_mat
from tests import REALFILES

MAT = REALFILES / "mat"
DNCNN = MAT / "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat"
LAPSRN = MAT / "dagnn_v5_LapSRN_x2.mat"
VERSIONS = ["7", "7.3"]


def assert_same_tree(expected: Any, actual: Any, where: str = "tree") -> None:
    """Plain trees equal: same types, dict keys in order, array dtypes, shapes and values."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: fields {list(actual)}"
        for key in expected:
            assert_same_tree(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: length {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same_tree(e, a, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape}"
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    else:
        assert actual == expected, where


def _pitfall_tree() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {
        "net": {
            "vars": [{"name": "x", "precious": np.array([[False]])},
                     {"name": "y", "precious": np.array([[True]])}],
            "params": [
                {"name": "w", "value": rng.standard_normal((3, 3, 2, 4)).astype(np.float32)},
                {"name": "b", "value": np.arange(4, dtype=np.float32).reshape(4, 1)},
                {"name": "k", "value": rng.standard_normal((3, 3, 5)).astype(np.float32)},
            ],
            "layers": [
                {"name": "c", "type": "dagnn.Conv", "inputs": ["x"], "outputs": ["y"],
                 "params": ["w", "b"],
                 "block": {"size": np.array([[3.0, 3, 2, 4]]), "hasBias": np.array([[True]]),
                           "opts": []}},
                {"name": "s", "type": "dagnn.Sum", "inputs": ["x", "y"], "outputs": ["z"],
                 "params": [], "block": {}},
            ],
            "meta": np.zeros((0, 0)),
        },
        "integers_as_double": np.array([[1.0, 2.0, 300.0]]),
        "int16": np.array([[1, -2]], dtype=np.int16),
        "uint8_3d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "one_element_cell": [np.array([[5.0]])],
        "cell_of_one_struct": [{"a": np.ones((1, 1))}],
        "char_rows": ["ab", "cd"],
        "empty_char": "",
        "unicode": "h\u00e9llo \u2211",
        "empty_single": np.zeros((0, 3), dtype=np.float32),
        "logical_matrix": np.array([[True, False], [False, True]]),
        "nested": [[np.ones((2, 2), dtype=np.uint8)], {"a": {}}, "text"],
        "fieldless": {},
        "big": rng.standard_normal((64, 33, 5)),
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_of_every_pitfall(tmp_path: Path, version: str) -> None:
    tree = _pitfall_tree()
    path = save_mat(tmp_path / "t.mat", tree, version=version)
    assert mat_format(path) == ("v7.3" if version == "7.3" else "v5")
    back = load_mat(path)
    assert set(back) == set(tree)  # HDF5 lists top-level variables by name
    assert_same_tree(tree, {name: back[name] for name in tree})


def test_listed_shapes_and_classes_agree_across_versions(tmp_path: Path) -> None:
    tree = _pitfall_tree()
    v7 = list_variables(save_mat(tmp_path / "a.mat", tree, version="7"))
    v73 = list_variables(save_mat(tmp_path / "b.mat", tree, version="7.3"))
    assert v7 == v73
    assert v7["unicode"] == ((1, 7), "char") and v7["empty_char"] == ((0, 0), "char")
    assert v7["uint8_3d"] == ((2, 3, 4), "uint8") and v7["net"] == ((1, 1), "struct")


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_of_the_real_dncnn_checkpoint(tmp_path: Path, version: str) -> None:
    tree = load_mat(DNCNN)
    back = load_mat(save_mat(tmp_path / "dncnn.mat", tree, version=version))
    assert_same_tree(tree, back)


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_of_the_real_lapsrn_net(tmp_path: Path, version: str) -> None:
    tree = load_mat(LAPSRN)
    assert_same_tree(tree, load_mat(save_mat(tmp_path / "lapsrn.mat", tree, version=version)))


def test_v7_is_what_matlab_would_load(tmp_path: Path) -> None:
    """Checked with plain scipy: classes, struct arrays, cells and the field-less struct."""
    path = save_mat(tmp_path / "t.mat", _pitfall_tree(), version="7")
    classes = dict((name, (shape, cls)) for name, shape, cls in scipy.io.whosmat(path))
    assert classes["net"] == ((1, 1), "struct")
    assert classes["one_element_cell"] == ((1, 1), "cell")
    assert classes["logical_matrix"] == ((2, 2), "logical")
    assert classes["fieldless"] == ((1, 1), "struct")
    raw = scipy.io.loadmat(path)
    layers = raw["net"]["layers"][0, 0]
    assert layers.dtype.names == ("name", "type", "inputs", "outputs", "params", "block")
    assert layers.shape == (1, 2)
    assert raw["net"]["params"][0, 0][0, 2]["value"].shape == (3, 3, 5)


def test_v73_follows_matlab_conventions_like_the_real_file(tmp_path: Path) -> None:
    tree = load_mat(DNCNN)
    ours = save_mat(tmp_path / "ours.mat", tree, version="7.3")
    real_head = DNCNN.read_bytes()[:128]
    our_head = ours.read_bytes()[:128]
    assert our_head.startswith(b"MATLAB 7.3 MAT-file, Platform: ")
    assert b"HDF5 schema 1.00 ." in our_head
    assert our_head[116:] == real_head[116:]  # subsystem offset, version 0x0200, 'IM'
    assert scipy.io.matlab.matfile_version(str(ours)) == (2, 0)
    with h5py.File(DNCNN, "r") as real, h5py.File(ours, "r") as mine:
        assert mine.userblock_size == real.userblock_size == 512
        for name in ("net", "net/layers", "net/params", "net/vars"):
            assert mine[name].attrs["MATLAB_class"] == real[name].attrs["MATLAB_class"]
            ours_type = h5py.h5a.open(mine[name].id, b"MATLAB_class").get_type()
            real_type = h5py.h5a.open(real[name].id, b"MATLAB_class").get_type()
            assert (ours_type.get_size(), ours_type.get_strpad()) == \
                (real_type.get_size(), real_type.get_strpad())
            assert [bytes(b"".join(f)) for f in mine[name].attrs["MATLAB_fields"]] == \
                [bytes(b"".join(f)) for f in real[name].attrs["MATLAB_fields"]]
        for field in ("name", "value", "learningRate"):  # struct-array fields: bare refs
            ours_field, real_field = mine[f"net/params/{field}"], real[f"net/params/{field}"]
            assert ours_field.shape == real_field.shape == (79, 1)
            assert ours_field.dtype == real_field.dtype == h5py.ref_dtype
            assert "MATLAB_class" not in ours_field.attrs
        for key in ("name", "value"):
            mine_node = mine[mine["net/params/" + key][0, 0]]
            real_node = real[real["net/params/" + key][0, 0]]
            assert mine_node.shape == real_node.shape
            assert mine_node.dtype == real_node.dtype
            assert mine_node.attrs["MATLAB_class"] == real_node.attrs["MATLAB_class"]
            assert mine_node.attrs.get("MATLAB_int_decode") == \
                real_node.attrs.get("MATLAB_int_decode")
        meta_attrs = {k: mine["net/meta"].attrs[k] for k in ("MATLAB_class", "MATLAB_empty")}
        assert meta_attrs == {k: real["net/meta"].attrs[k] for k in meta_attrs}
        np.testing.assert_array_equal(mine["net/meta"][()], real["net/meta"][()])
        names = [n["name"] for n in tree["net"]["layers"]]
        index = names.index("sum49")
        for handle in (mine, real):
            fieldless = handle[handle["net/layers/block"][index, 0]]
            assert fieldless.attrs["MATLAB_class"] == b"struct"
            assert fieldless.attrs["MATLAB_empty"] == 1
            assert fieldless.dtype == np.uint64
            np.testing.assert_array_equal(fieldless[()], [1, 1])


def test_v73_logical_and_char_encoding(tmp_path: Path) -> None:
    path = save_mat(tmp_path / "t.mat", {"flag": np.array([[True, False, True]]),
                                         "word": "abc"}, version="7.3")
    with h5py.File(path, "r") as handle:
        flag, word = handle["flag"], handle["word"]
        assert (flag.dtype, flag.shape) == (np.uint8, (3, 1))
        assert flag.attrs["MATLAB_class"] == b"logical" and flag.attrs["MATLAB_int_decode"] == 1
        assert (word.dtype, word.shape) == (np.uint16, (3, 1))
        assert word.attrs["MATLAB_class"] == b"char" and word.attrs["MATLAB_int_decode"] == 2
        assert bytes(word[()].ravel().astype(np.uint8)) == b"abc"
    assert list_variables(path) == {"flag": ((1, 3), "logical"), "word": ((1, 3), "char")}


def test_large_arrays_are_compressed_in_v73(tmp_path: Path) -> None:
    big = np.zeros((256, 256, 4), dtype=np.float32)
    path = save_mat(tmp_path / "big.mat", {"big": big}, version="7.3")
    with h5py.File(path, "r") as handle:
        assert handle["big"].compression == "gzip"
        assert handle["big"].shape == (4, 256, 256)
    assert path.stat().st_size < big.nbytes // 10


def test_plain_python_scalars_become_matlab_scalars(tmp_path: Path) -> None:
    path = save_mat(tmp_path / "s.mat", {"f": 0.5, "i": 3, "b": True, "n": None}, version="7")
    back = load_mat(path)
    assert back["f"].dtype == np.float64 and back["f"].shape == (1, 1)
    assert back["i"].dtype == np.float64 and back["i"][0, 0] == 3.0
    assert back["b"].dtype == bool
    assert back["n"].shape == (0, 0)


def test_tuple_is_always_a_cell(tmp_path: Path) -> None:
    layers = ({"type": "relu"}, {"type": "relu"})
    for version in VERSIONS:
        path = save_mat(tmp_path / f"c{version}.mat", {"layers": layers}, version=version)
        assert list_variables(path)["layers"] == ((1, 2), "cell")
        assert load_mat(path)["layers"] == [{"type": "relu"}, {"type": "relu"}]


@pytest.mark.parametrize("version", VERSIONS)
def test_failed_write_leaves_nothing_behind(tmp_path: Path, version: str) -> None:
    target = tmp_path / "out.mat"
    with pytest.raises(MatConvNetError, match="2bad"):
        save_mat(target, {"net": {"ok": 1.0, "2bad": 2.0}}, version=version)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.mat"
    save_mat(target, {"a": 1.0})
    with pytest.raises(MatConvNetError):
        save_mat(target, {"a": object()})
    assert load_mat(target)["a"][0, 0] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["out.mat"]


def test_unknown_version_and_complex_in_v7_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MatConvNetError, match="version"):
        save_mat(tmp_path / "x.mat", {"a": 1.0}, version="6")
    with pytest.raises(MatConvNetError, match="complex"):
        save_mat(tmp_path / "x.mat", {"z": np.array([[1 + 2j]])}, version="7")
    back = load_mat(save_mat(tmp_path / "z.mat", {"z": np.array([[1 + 2j, 3]])}, version="7.3"))
    np.testing.assert_array_equal(back["z"], [[1 + 2j, 3 + 0j]])
