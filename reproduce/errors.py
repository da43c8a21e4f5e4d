"""The exception type ``reproduce`` raises for bad user input (missing files, wrong layouts)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad or missing input: the message names the file, folder or line at fault."""
