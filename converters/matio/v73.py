"""Read MAT v7.3 (HDF5) files with h5py into the plain tree of ``converters.matio.read``.

MATLAB's conventions, as this reader follows them:

- every variable node carries ``MATLAB_class`` (``double``, ``single``, ``char``, ``logical``,
  ``cell``, ``struct``, ``intN``...); HDF5 holds the array with its dimensions reversed, so
  MATLAB's array is the transpose of what h5py returns;
- ``char`` is stored as uint16 code units, ``logical`` as uint8 (``MATLAB_int_decode``);
- a cell is a dataset of object references into ``/#refs#``;
- a 1x1 struct is a group whose children are its fields (order in ``MATLAB_fields``); a struct
  array is a group whose fields are reference datasets shaped like the array (without
  ``MATLAB_class``), one reference per element;
- an empty value is a dataset with ``MATLAB_empty=1`` whose data are its MATLAB dimensions;
  a field-less 1x1 struct is such a dataset holding ``[1 1]``;
- ``/#subsystem#`` (MCOS objects such as ``string``) is skipped, as are the objects
  (``MATLAB_object_decode``) that point into it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5o, h5r, h5s

from converters.errors import MatConvNetError

log = logging.getLogger(__name__)

# The reader works on h5py's low-level object ids: a checkpoint holds thousands of small
# nodes, and the high-level wrappers cost several times more per node than the reads.
NodeID = h5d.DatasetID | h5g.GroupID

_NUMERIC = {
    "double": np.float64, "single": np.float32,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
}
_HIDDEN = (b"#refs#", b"#subsystem#")
_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)


def load_v73(path: str | os.PathLike[str], variables: list[str] | None = None) -> dict[str, Any]:
    """Load the named (or all) top-level variables of a v7.3 file; absent names are left out."""
    try:
        with h5py.File(os.fspath(path), "r") as handle:
            reader = _Reader(handle.id, str(path))
            names = _top_level(handle.id)
            if variables is not None:
                names = [n for n in names if n in variables]
            return {name: reader.node(h5o.open(handle.id, name.encode()), f"{path}:{name}")
                    for name in names}
    except MatConvNetError:
        raise
    except _ERRORS as exc:
        raise MatConvNetError(f"{path}: cannot read MAT v7.3 (HDF5) file "
                              f"(truncated or damaged?): {exc}") from exc


def list_v73(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, class)}`` of a v7.3 file's variables without reading their data."""
    try:
        with h5py.File(os.fspath(path), "r") as handle:
            found = {}
            for name in _top_level(handle.id):
                node = h5o.open(handle.id, name.encode())
                found[name] = (_shape(node), _class(node))
            return found
    except _ERRORS as exc:
        raise MatConvNetError(f"{path}: cannot list MAT v7.3 (HDF5) variables "
                              f"(truncated or damaged?): {exc}") from exc


def _top_level(fid: h5py.h5f.FileID) -> list[str]:
    """The file's variable names (``#refs#`` and ``#subsystem#`` left out)."""
    root = h5o.open(fid, b"/")
    return [name.decode("utf-8") for name in root if name not in _HIDDEN]


def _attr(node: NodeID, name: bytes) -> Any:
    """An attribute's value (a 0-d attribute as a scalar), or None when absent."""
    if not h5a.exists(node, name):
        return None
    attr = h5a.open(node, name)
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return value[()] if value.ndim == 0 else value


def _class(node: NodeID) -> str:
    """The node's ``MATLAB_class`` attribute as str ('' when absent)."""
    value = _attr(node, b"MATLAB_class")
    if value is None:
        return ""
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _read(node: h5d.DatasetID) -> np.ndarray:
    """A dataset's whole content, in HDF5's (reversed) dimension order."""
    data = np.empty(node.shape, dtype=node.dtype)
    if data.size:
        node.read(h5s.ALL, h5s.ALL, data)
    return data


def _is_empty(node: NodeID) -> bool:
    """Whether the node is a MATLAB empty marker (its data are its dimensions)."""
    return isinstance(node, h5d.DatasetID) and bool(_attr(node, b"MATLAB_empty"))


def _field_names(group: h5g.GroupID) -> list[str]:
    """Struct field names in MATLAB's order (``MATLAB_fields``), else the group's children."""
    raw = _attr(group, b"MATLAB_fields")
    if raw is None:
        return [name.decode("utf-8") for name in group if name not in _HIDDEN]
    return [b"".join(bytes(c) for c in np.asarray(entry).ravel()).decode("utf-8")
            for entry in np.atleast_1d(raw)]


def _is_struct_array_field(node: NodeID) -> bool:
    """A struct-array field: a reference dataset without ``MATLAB_class``."""
    return (isinstance(node, h5d.DatasetID) and not h5a.exists(node, b"MATLAB_class")
            and node.get_type().get_class() == h5py.h5t.REFERENCE)


def _shape(node: NodeID) -> tuple[int, ...]:
    """The node's MATLAB dimensions, read from metadata (or the tiny dims of an empty)."""
    if _is_empty(node):
        return tuple(int(n) for n in _read(node).ravel())
    if isinstance(node, h5g.GroupID):
        sparse = _attr(node, b"MATLAB_sparse")
        if sparse is not None:
            cols = h5o.open(node, b"jc").shape[0] - 1 if b"jc" in node else 0
            return (int(sparse), int(cols))
        fields = _field_names(node)
        if fields and fields[0].encode() in node:
            first = h5o.open(node, fields[0].encode())
            if _is_struct_array_field(first):
                return tuple(reversed(first.shape))
        return (1, 1)
    return tuple(reversed(node.shape))


class _Reader:
    """Turns HDF5 nodes of one open file into plain values."""

    def __init__(self, fid: h5py.h5f.FileID, source: str) -> None:
        self.fid = fid
        self.source = source

    def deref(self, ref: h5r.Reference) -> NodeID:
        """The node an object reference points to."""
        return h5r.dereference(ref, self.fid)

    def node(self, node: NodeID, where: str) -> Any:
        """One HDF5 node (a variable, field, or cell element) as a plain value."""
        cls = _class(node)
        if h5a.exists(node, b"MATLAB_object_decode") or cls in ("function_handle", "opaque"):
            log.warning("%s: skipping MATLAB object of class %r (MCOS/#subsystem# data)",
                        where, cls)
            return None
        if isinstance(node, h5g.GroupID):
            if h5a.exists(node, b"MATLAB_sparse"):
                return _sparse(node, cls)
            return self.struct(node, where)
        if _is_empty(node):
            return _empty(node, cls)
        if cls == "cell":
            return [self.node(self.deref(ref), f"{where}{{{i + 1}}}")
                    for i, ref in enumerate(_read(node).ravel())]
        if cls == "struct":  # a struct dataset that is not MATLAB_empty: nothing to read
            return {}
        data = _read(node)
        if cls == "char":
            return _chars(data)
        if cls == "logical":
            return data.astype(bool).T
        if data.dtype.names is not None and {"real", "imag"} <= set(data.dtype.names):
            data = data["real"] + 1j * data["imag"]
        if cls in _NUMERIC and not np.iscomplexobj(data):
            data = data.astype(_NUMERIC[cls], copy=False)
        if data.ndim < 2:
            data = data.reshape((1,) * (2 - data.ndim) + data.shape)
        return data.T

    def struct(self, group: h5g.GroupID, where: str) -> dict[str, Any] | list[dict[str, Any]]:
        """A struct group: a dict (1x1) or a list of dicts (struct array, column-major)."""
        fields = [f for f in _field_names(group) if f.encode() in group]
        children = {f: h5o.open(group, f.encode()) for f in fields}
        if fields and _is_struct_array_field(children[fields[0]]):
            columns = {f: _read(children[f]).ravel() for f in fields}
            count = len(columns[fields[0]])
            items = [
                {f: self.node(self.deref(columns[f][i]), f"{where}({i + 1}).{f}")
                 for f in fields}
                for i in range(count)
            ]
            if tuple(reversed(children[fields[0]].shape)) == (1, 1):
                return items[0]
            return items
        return {f: self.node(children[f], f"{where}.{f}") for f in fields}


def _empty(node: h5d.DatasetID, cls: str) -> Any:
    """A ``MATLAB_empty`` marker: its data are the MATLAB dims of the empty value."""
    dims = tuple(int(n) for n in _read(node).ravel())
    if cls == "char":
        return ""
    if cls == "cell":
        return []
    if cls == "struct":
        count = int(np.prod(dims)) if dims else 0
        if count == 0:
            return []
        if dims == (1, 1):
            return {}
        return [{} for _ in range(count)]
    if cls == "logical":
        return np.zeros(dims, dtype=bool)
    return np.zeros(dims, dtype=_NUMERIC.get(cls, np.float64))


def _chars(data: np.ndarray) -> str | list[str]:
    """uint16 code units (HDF5 order) as str, or a list of str for a multi-row char matrix."""
    units = np.asarray(data, dtype=np.uint16)
    if units.ndim < 2:
        units = units.reshape(-1, 1)
    rows = np.ascontiguousarray(units.T)  # MATLAB rows x columns
    texts = [row.astype("<u2").tobytes().decode("utf-16-le", errors="replace") for row in rows]
    if len(texts) == 1:
        return texts[0]
    return texts


def _sparse(group: h5g.GroupID, cls: str) -> np.ndarray:
    """A MATLAB sparse matrix (``data``, ``ir``, ``jc``) as a dense array."""
    rows = int(_attr(group, b"MATLAB_sparse"))
    jc = _read(h5o.open(group, b"jc")).ravel().astype(np.int64)
    cols = len(jc) - 1
    dtype = bool if cls == "logical" else _NUMERIC.get(cls, np.float64)
    dense = np.zeros((rows, cols), dtype=dtype)
    if b"data" in group and b"ir" in group:
        data = _read(h5o.open(group, b"data")).ravel()
        ir = _read(h5o.open(group, b"ir")).ravel().astype(np.int64)
        for col in range(cols):
            dense[ir[jc[col]:jc[col + 1]], col] = data[jc[col]:jc[col + 1]]
    return dense
