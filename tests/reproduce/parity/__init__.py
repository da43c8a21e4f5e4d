"""Tests of ``reproduce.parity``."""
