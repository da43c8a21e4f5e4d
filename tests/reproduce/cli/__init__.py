"""Tests of ``reproduce.cli``."""
