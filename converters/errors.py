"""The one exception type the converters raise for bad input."""

from __future__ import annotations


class MatConvNetError(ValueError):
    """Bad or unsupported input: the message names the file, layer or parameter at fault."""
