"""Tests of ``reproduce.loss``."""
