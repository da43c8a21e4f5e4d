"""Write a plain tree (the form ``converters.matio.read.load_mat`` returns) as a MAT file.

``save_mat(path, {name: value}, version="7")`` writes MAT v7 (scipy, zlib-compressed);
``version="7.3"`` writes HDF5 the way MATLAB does (512-byte userblock with the MATLAB 7.3
header, ``MATLAB_class`` on every variable node, reversed dimensions, uint16 chars, cells and
struct-array fields as object references into ``/#refs#``, ``MATLAB_empty`` markers holding
the dimensions of empty values, a field-less 1x1 struct as such a marker holding ``[1 1]``).

How plain values are written (the inverse of the reader's rules):

- ``dict`` -> 1x1 struct (``{}`` -> field-less 1x1 struct);
- ``list`` of two or more dicts with the same, non-empty field names (same order) -> 1xN
  struct array; any other ``list`` -> 1xN cell (``[]`` -> 0x0 cell). A ``tuple`` is always
  a cell, so a cell of structs is written with a tuple;
- ``str`` -> 1xN char (``""`` -> 0x0 char);
- ``np.ndarray`` -> its dtype and shape (0-d -> 1x1, 1-D -> 1xN row); bool -> logical;
  an object ndarray -> a cell of that shape;
- Python ``bool`` -> 1x1 logical, ``int``/``float`` -> 1x1 double, ``None`` -> ``[]``;
- complex arrays only in v7.3 (scipy's ``mat_dtype`` reading would drop their imaginary part).

``load_mat(save_mat(tree)) == tree`` for every plain tree (both versions). Files are written
to a temporary name beside ``path`` and renamed, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from converters.atomic_file import atomic_path
from converters.errors import MatConvNetError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_MATLAB_CLASS = {
    "float64": "double", "float32": "single", "int8": "int8", "uint8": "uint8",
    "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32",
    "int64": "int64", "uint64": "uint64", "bool": "logical",
    "complex128": "double", "complex64": "single",
}
# Arrays at least this large are stored chunked and gzip-compressed in v7.3 (as MATLAB does).
_COMPRESS_MIN_BYTES = 16 * 1024


def save_mat(path: str | os.PathLike[str], variables: dict[str, Any], *, version: str = "7",
             compress: bool = True) -> Path:
    """Write ``variables`` (``{name: plain value}``) as a MAT file and return its path.

    ``version`` is ``"7"`` (scipy; zlib compression unless ``compress=False``) or ``"7.3"``
    (h5py; gzip level 3 on large arrays unless ``compress=False``).
    """
    for name in variables:
        _check_name(name, str(path))
    if version not in ("7", "7.3"):
        raise MatConvNetError(f"{path}: unknown MAT version {version!r} (expected '7' or '7.3')")
    with atomic_path(path) as tmp:
        if version == "7":
            _write_v7(tmp, variables, compress, str(path))
        else:
            _write_v73(tmp, variables, compress, str(path))
    return Path(path)


def _check_name(name: str, where: str) -> None:
    """Variable and field names must be MATLAB identifiers."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise MatConvNetError(f"{where}: {name!r} is not a valid MATLAB variable/field name")


# ---------------------------------------------------------------- classification (shared)

def _kind(value: Any) -> str:
    """Which MATLAB value a plain value becomes: struct, fieldless, structs, cell, char,
    array or empty (``None``)."""
    if isinstance(value, dict):
        return "struct" if value else "fieldless"
    if isinstance(value, tuple):
        return "cell"
    if isinstance(value, list):
        if len(value) >= 2 and all(isinstance(v, dict) for v in value):
            keys = list(value[0])
            if keys and all(list(v) == keys for v in value[1:]):
                return "structs"
        return "cell"
    if isinstance(value, str):
        return "char"
    if value is None:
        return "empty"
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return "cell"
    return "array"


def _cell_items(value: Any) -> tuple[tuple[int, ...], list[Any]]:
    """A cell's MATLAB shape and its elements in column-major order."""
    if isinstance(value, np.ndarray):
        array = value.reshape(1, -1) if value.ndim < 2 else value
        return tuple(array.shape), list(array.ravel(order="F"))
    items = list(value)
    return ((1, len(items)) if items else (0, 0)), items


def _as_array(value: Any, where: str) -> np.ndarray:
    """A numeric/logical plain value as an at-least-2-D ndarray of a MATLAB class."""
    if isinstance(value, bool | np.bool_):
        array = np.array(value, dtype=bool)
    elif isinstance(value, int | float) and not isinstance(value, np.generic):
        array = np.array(value, dtype=np.float64)
    else:
        array = np.asarray(value)
    if array.dtype.name not in _MATLAB_CLASS:
        raise MatConvNetError(f"{where}: cannot store a value of type "
                              f"{type(value).__name__} (dtype {array.dtype}) in a MAT file")
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)
    return array


# ---------------------------------------------------------------- v7 (scipy)

def _write_v7(tmp: Path, variables: dict[str, Any], compress: bool, source: str) -> None:
    """Convert to scipy's objects (record arrays, object arrays) and ``savemat``."""
    converted = {name: _to_scipy(value, f"{source}:{name}") for name, value in variables.items()}
    with open(tmp, "wb") as handle:
        scipy.io.savemat(handle, converted, do_compression=compress, long_field_names=True,
                         format="5", oned_as="row")


def _to_scipy(value: Any, where: str) -> Any:
    """One plain value as the object scipy writes as the intended MATLAB class."""
    kind = _kind(value)
    if kind == "fieldless":
        return {}  # scipy writes an empty mapping as a field-less 1x1 struct
    if kind in ("struct", "structs"):
        items = [value] if kind == "struct" else value
        fields = list(items[0])
        for field in fields:
            _check_name(field, where)
        records = np.empty((1, len(items)), dtype=[(f, object) for f in fields])
        for i, item in enumerate(items):
            for field in fields:
                records[field][0, i] = _to_scipy(item[field], f"{where}({i + 1}).{field}")
        return records
    if kind == "cell":
        shape, items = _cell_items(value)
        cell = np.empty(shape, dtype=object)
        flat = [_to_scipy(item, f"{where}{{{i + 1}}}") for i, item in enumerate(items)]
        for index, item in zip(np.ndindex(*shape[::-1]), flat, strict=True):
            cell[index[::-1]] = item
        return cell
    if kind == "char":
        return np.array(value, dtype="U") if value else np.zeros((0, 0), dtype="U1")
    if kind == "empty":
        return np.zeros((0, 0))
    array = _as_array(value, where)
    if np.iscomplexobj(array):
        raise MatConvNetError(f"{where}: complex values are only written as MAT v7.3 "
                              "(the v5/v7 reader cannot read them back)")
    return array


# ---------------------------------------------------------------- v7.3 (h5py)

_REFS = "#refs#"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _set_attr(node: h5py.Dataset | h5py.Group, name: str, value: bytes | np.generic) -> None:
    """Write a scalar attribute through h5py's low-level API (thousands per checkpoint).

    Strings are fixed-length, typed null-terminated but filling the whole size (no room
    for the terminator), byte for byte as MATLAB writes ``MATLAB_class``.
    """
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    if isinstance(value, bytes):
        data = np.array(value, dtype=f"S{max(len(value), 1)}")
        htype = h5py.h5t.C_S1.copy()
        htype.set_size(data.dtype.itemsize)
        htype.set_strpad(h5py.h5t.STR_NULLTERM)
    else:
        data = np.asarray(value)
        htype = h5py.h5t.py_create(data.dtype)
    h5py.h5a.create(node.id, name.encode("ascii"), htype, space).write(data, mtype=htype)


def _header_text() -> bytes:
    """The 128-byte MAT 7.3 header MATLAB puts in the HDF5 userblock."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} "
            "HDF5 schema 1.00 .").encode("ascii")
    return text.ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM"


class _V73Writer:
    """Writes plain values into an open HDF5 file following MATLAB's 7.3 layout."""

    def __init__(self, handle: h5py.File, compress: bool) -> None:
        self.handle = handle
        self.compress = compress
        self.count = 0
        self._refs: h5py.Group | None = None

    def refs(self) -> h5py.Group:
        """``/#refs#``, created (with MATLAB's ``canonical empty`` entry) on first use."""
        if self._refs is None:
            self._refs = self.handle.create_group(_REFS)
            _set_attr(self._refs, "H5PATH", b"/" + _REFS.encode())
            marker = self._refs.create_dataset("a", data=np.zeros(2, dtype=np.uint64))
            _set_attr(marker, "MATLAB_class", b"canonical empty")
            _set_attr(marker, "MATLAB_empty", np.uint8(1))
            self.count = 1
        return self._refs

    def ref_name(self) -> str:
        """The next free name in ``/#refs#`` (a, b, ..., 9, ba, bb, ...)."""
        number = self.count
        self.count += 1
        digits = ""
        base = len(_NAME_CHARS)
        while True:
            digits = _NAME_CHARS[number % base] + digits
            number //= base
            if number == 0:
                return digits

    def reference(self, value: Any, where: str) -> h5py.Reference:
        """Write ``value`` into ``/#refs#`` and return an object reference to it."""
        refs = self.refs()
        return self.write(refs, self.ref_name(), value, where).ref

    def write(self, parent: h5py.Group, name: str, value: Any,
              where: str) -> h5py.Dataset | h5py.Group:
        """Write one plain value as ``parent[name]`` with MATLAB's attributes."""
        kind = _kind(value)
        if kind == "fieldless":
            return self._empty(parent, name, "struct", (1, 1))
        if kind == "struct":
            return self._struct(parent, name, value, where)
        if kind == "structs":
            return self._struct_array(parent, name, value, where)
        if kind == "cell":
            shape, items = _cell_items(value)
            if not items:
                return self._empty(parent, name, "cell", shape)
            refs = [self.reference(item, f"{where}{{{i + 1}}}") for i, item in enumerate(items)]
            node = self._refs_dataset(parent, name, refs, shape)
            self._tag(node, parent, "cell")
            return node
        if kind == "char":
            if not value:
                return self._empty(parent, name, "char", (0, 0))
            units = np.frombuffer(value.encode("utf-16-le"), dtype="<u2").reshape(-1, 1)
            node = parent.create_dataset(name, data=units)
            self._tag(node, parent, "char")
            _set_attr(node, "MATLAB_int_decode", np.int32(2))
            return node
        if kind == "empty":
            return self._empty(parent, name, "double", (0, 0))
        return self._array(parent, name, _as_array(value, where))

    def _tag(self, node: h5py.Dataset | h5py.Group, parent: h5py.Group, cls: str) -> None:
        """Set ``MATLAB_class`` (and MATLAB's ``H5PATH`` on nested nodes)."""
        if parent.name != "/":
            _set_attr(node, "H5PATH", parent.name.encode("utf-8"))
        _set_attr(node, "MATLAB_class", cls.encode("ascii"))

    def _empty(self, parent: h5py.Group, name: str, cls: str,
               dims: tuple[int, ...]) -> h5py.Dataset:
        """A ``MATLAB_empty`` marker whose data are the value's MATLAB dimensions."""
        node = parent.create_dataset(name, data=np.asarray(dims, dtype=np.uint64))
        self._tag(node, parent, cls)
        _set_attr(node, "MATLAB_empty", np.uint8(1))
        return node

    def _array(self, parent: h5py.Group, name: str, array: np.ndarray) -> h5py.Dataset:
        """A numeric or logical array, dims reversed (HDF5 sees MATLAB's transpose)."""
        cls = _MATLAB_CLASS[array.dtype.name]
        if array.size == 0:
            return self._empty(parent, name, cls, tuple(array.shape))
        data = array.T  # C-order view of the column-major data: no copy for F-ordered input
        if array.dtype == bool:
            data = data.astype(np.uint8)
        elif np.iscomplexobj(data):
            part = data.real.dtype
            compound = np.empty(data.shape, dtype=[("real", part), ("imag", part)])
            compound["real"], compound["imag"] = data.real, data.imag
            data = compound
        options: dict[str, Any] = {}
        if self.compress and data.nbytes >= _COMPRESS_MIN_BYTES:
            options = {"compression": "gzip", "compression_opts": 3, "chunks": True}
        node = parent.create_dataset(name, data=np.ascontiguousarray(data), **options)
        self._tag(node, parent, cls)
        if array.dtype == bool:
            _set_attr(node, "MATLAB_int_decode", np.int32(1))
        return node

    def _fields_attr(self, node: h5py.Group, fields: list[str]) -> None:
        """``MATLAB_fields``: the field names as variable-length arrays of single chars."""
        names = np.empty(len(fields), dtype=object)
        for i, field in enumerate(fields):
            names[i] = np.frombuffer(field.encode("ascii"), dtype="S1")
        node.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))

    def _struct(self, parent: h5py.Group, name: str, value: dict[str, Any],
                where: str) -> h5py.Group:
        """A 1x1 struct: a group whose children are the fields."""
        group = parent.create_group(name)
        self._tag(group, parent, "struct")
        fields = list(value)
        for field in fields:
            _check_name(field, where)
        self._fields_attr(group, fields)
        for field in fields:
            self.write(group, field, value[field], f"{where}.{field}")
        return group

    def _struct_array(self, parent: h5py.Group, name: str, value: list[dict[str, Any]],
                      where: str) -> h5py.Group:
        """A 1xN struct array: one reference dataset per field, one reference per element."""
        group = parent.create_group(name)
        self._tag(group, parent, "struct")
        fields = list(value[0])
        for field in fields:
            _check_name(field, where)
        self._fields_attr(group, fields)
        shape = (1, len(value))
        for field in fields:
            refs = [self.reference(item[field], f"{where}({i + 1}).{field}")
                    for i, item in enumerate(value)]
            self._refs_dataset(group, field, refs, shape)
        return group

    def _refs_dataset(self, parent: h5py.Group, name: str, refs: list[h5py.Reference],
                      shape: tuple[int, ...]) -> h5py.Dataset:
        """A dataset of object references laid out like a MATLAB array of ``shape``."""
        data = np.empty(len(refs), dtype=h5py.ref_dtype)
        data[:] = refs
        return parent.create_dataset(name, data=data.reshape(shape[::-1]))


def _write_v73(tmp: Path, variables: dict[str, Any], compress: bool, source: str) -> None:
    """Write HDF5 with a 512-byte userblock, then put MATLAB's header text into it."""
    with h5py.File(tmp, "w", userblock_size=512, libver="earliest") as handle:
        writer = _V73Writer(handle, compress)
        for name, value in variables.items():
            writer.write(handle, name, value, f"{source}:{name}")
    with open(tmp, "r+b") as raw:
        raw.write(_header_text())
