"""Tests of ``logs``."""
