"""The exception type ``logs`` raises for files it cannot read as text diaries or stats."""

from __future__ import annotations


class LogFormatError(ValueError):
    """A log or stats input that cannot be read at all; the message names the file at fault.

    Lines the parser does not know are never errors: they are counted and reported.
    """
