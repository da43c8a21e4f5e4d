"""Tests of ``converters.matio``."""
