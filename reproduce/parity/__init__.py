"""Parity with saved MATLAB values: fixture formats, comparison rows, one checker per family.

``fastap`` checks the loss fixtures, ``recall`` the Recall@K fixtures; ``run_parity`` (in
``fastap``) detects each file's family by its fields. The shipped fixtures live in
``fixtures/``, one folder per family with the README that documents its fields.
"""
