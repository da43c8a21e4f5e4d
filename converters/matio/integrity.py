"""Is a MAT v5/v7 file whole? A cheap walk over its top-level variable tags.

scipy's reader, asked for one variable of a file cut short, returns the variables before
the cut and silently nothing after it, so "the variable is missing" and "the file is
truncated" look alike. :func:`mat_v5_truncation` tells them apart without reading any
variable's contents: it follows the 8-byte tags (type, byte count) of the top-level data
elements and says where one runs past the end of the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["mat_v5_truncation"]

_MI_COMPRESSED = 15
_V5_HEADER = 128


def mat_v5_truncation(path: str | os.PathLike[str]) -> str | None:
    """Where a MAT v5/v7 file is cut short, or None when every top-level variable fits.

    Walks the top-level data elements (8-byte tag: type, byte count) without reading their
    contents; a v7.3 (HDF5) or v4 file is left to its own reader (None).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(_V5_HEADER)
        if len(header) < _V5_HEADER or header[124:126] not in (b"\x00\x01", b"\x01\x00"):
            return None  # not v5 (v7.3 is version 0x0200): not this walker's business
        order = "<" if header[126:128] == b"IM" else ">"
        position = _V5_HEADER
        while position < size:
            handle.seek(position)
            tag = handle.read(8)
            if len(tag) < 8:
                return f"the file ends inside a variable tag at byte {position:,}"
            kind, nbytes = struct.unpack(order + "II", tag)
            if kind >> 16:  # small data element: type and size share the first word
                position += 8
                continue
            end = position + 8 + nbytes
            if end > size:
                return (f"the variable at byte {position:,} declares {nbytes:,} bytes, the file "
                        f"ends {end - size:,} bytes short of them")
            position = end if kind == _MI_COMPRESSED else end + (-end % 8)
    return None
