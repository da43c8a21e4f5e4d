"""The error ``logs`` raises for unreadable diaries or stats (from the one hierarchy)."""

from __future__ import annotations

from converters.errors import LogFormatError

__all__ = ["LogFormatError"]
