"""Tests of ``converters.fastap``."""
