"""Tests of ``converters.mcn``."""
