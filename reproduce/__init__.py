"""FastAP reproduction: loss port, parity checks, datasets, evaluation, tables, plots, CLI."""
