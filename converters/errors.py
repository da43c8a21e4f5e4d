"""The project's one error hierarchy: what the ``fastap`` command reports as the user's situation.

Every class names an area; every message names the file, layer, line or option at fault.
The CLI maps these (and ``OSError``) to one line and an exit status; any other exception is a
bug in our code and keeps its traceback. The hierarchy lives here, in the lowest layer, so
``converters``, ``logs`` and ``reproduce`` share it without depending on each other's code.

``FastAPReproError``
    ``InputError``: bad input in general (a missing path, a bad option value)
        ``InputFileError``: a file that cannot be read as what it should be
        ``MatConvNetError``: a MatConvNet file or network: damaged, unsupported, wrong shapes
        ``DatasetError``: a dataset's list files, images or counts
        ``LogFormatError``: a diary or checkpoint ``stats`` that cannot be read at all
    ``CheckFailedError``: a comparison beyond its tolerance (exit 1, not 2)
"""

from __future__ import annotations


class FastAPReproError(Exception):
    """Base of every error the toolkit raises for the user's situation rather than a bug."""

    #: The ``fastap`` exit status this error ends a command with.
    exit_status = 2


class InputError(FastAPReproError, ValueError):
    """Bad or missing input: the message names the file, folder, line or option at fault."""


class InputFileError(InputError):
    """A file that exists but cannot be read as what it should be (binary, truncated, empty)."""


class MatConvNetError(InputError):
    """Bad or unsupported MatConvNet input: the message names the file, layer or parameter."""


class DatasetError(InputError):
    """A dataset that does not match its official layout: names the file, line or image."""


class LogFormatError(InputError):
    """A log or stats input that cannot be read at all; the message names the file at fault.

    Lines the parser does not know are never errors: they are counted and reported.
    """


class CheckFailedError(FastAPReproError):
    """A parity or verification check that ran and came out beyond its tolerance."""

    exit_status = 1
