"""Tests of ``converters``."""
