"""``mat_v5_truncation``: a truncated MAT v5 file is told from an intact one, by its tags.

Element positions in the tests are read from the bytes by the MAT v5 layout (128-byte
header, then 8-byte tags: type, byte count; uncompressed elements padded to 8 bytes).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from converters.matio.integrity import mat_v5_truncation
from converters.matio.read import load_mat
from converters.matio.write import save_mat

VARIABLES = {"net": {"params": np.arange(300.0).reshape(20, 15)}, "stats": np.ones((4, 4)),
             "tail": "x"}


def _element_starts(data: bytes) -> list[int]:
    """Byte offsets of the top-level elements of an uncompressed little-endian v5 file."""
    starts, position = [], 128
    while position < len(data):
        starts.append(position)
        nbytes = struct.unpack("<I", data[position + 4:position + 8])[0]
        position += 8 + nbytes + (-(8 + nbytes) % 8)
    return starts


@pytest.mark.parametrize("compress", [False, True])
def test_intact_files_pass(tmp_path: Path, compress: bool) -> None:
    path = save_mat(tmp_path / "whole.mat", VARIABLES, compress=compress)
    assert mat_v5_truncation(path) is None
    assert set(load_mat(path)) == set(VARIABLES)


@pytest.mark.parametrize("compress", [False, True])
def test_a_cut_inside_the_last_variable_is_named(tmp_path: Path, compress: bool) -> None:
    path = save_mat(tmp_path / "cut.mat", VARIABLES, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    found = mat_v5_truncation(path)  # a matrix element's byte count includes its padding
    assert found is not None and found.endswith("the file ends 3 bytes short of them")


def test_cut_points_by_where_they_fall(tmp_path: Path) -> None:
    whole = save_mat(tmp_path / "whole.mat", VARIABLES, compress=False)
    data = whole.read_bytes()
    starts = _element_starts(data)
    assert len(starts) == 3
    cut = tmp_path / "cut.mat"
    cut.write_bytes(data[:starts[1]])  # at a boundary: two whole variables, none cut
    assert mat_v5_truncation(cut) is None
    cut.write_bytes(data[:starts[1] + 5])  # inside the second variable's tag
    assert mat_v5_truncation(cut) == f"the file ends inside a variable tag at byte {starts[1]:,}"
    cut.write_bytes(data[:starts[1] + 100])  # inside the second variable's contents
    nbytes = struct.unpack("<I", data[starts[1] + 4:starts[1] + 8])[0]
    short = starts[1] + 8 + nbytes - (starts[1] + 100)
    assert mat_v5_truncation(cut) == (f"the variable at byte {starts[1]:,} declares {nbytes:,} "
                                      f"bytes, the file ends {short:,} bytes short of them")


def _big_endian_header() -> bytes:
    text = b"MATLAB 5.0 MAT-file, written by hand".ljust(116, b" ")
    return text + b"\x00" * 8 + b"\x01\x00" + b"MI"


def test_big_endian_tags_and_small_elements(tmp_path: Path) -> None:
    path = tmp_path / "be.mat"
    small = struct.pack(">I", (4 << 16) | 9) + b"\x00\x00\x00\x01"  # 4-byte small element
    path.write_bytes(_big_endian_header() + small)
    assert mat_v5_truncation(path) is None
    path.write_bytes(_big_endian_header() + small + struct.pack(">II", 14, 1000) + b"\x00" * 16)
    assert mat_v5_truncation(path) == ("the variable at byte 136 declares 1,000 bytes, the file "
                                       "ends 984 bytes short of them")


def test_other_files_are_left_to_their_readers(tmp_path: Path) -> None:
    v73 = save_mat(tmp_path / "v73.mat", VARIABLES, version="7.3")
    assert mat_v5_truncation(v73) is None
    short = tmp_path / "short.mat"
    short.write_bytes(b"MATLAB 5.0")
    assert mat_v5_truncation(short) is None
    text = tmp_path / "notes.mat"
    text.write_text("x" * 400)
    assert mat_v5_truncation(str(text)) is None
