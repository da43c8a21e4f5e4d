"""Tests of the training engine (reproduce/training)."""
