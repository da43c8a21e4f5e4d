"""Tests of ``reproduce.report``."""
