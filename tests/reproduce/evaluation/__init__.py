"""Tests of ``reproduce.evaluation``."""
