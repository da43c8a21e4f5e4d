"""Dataset readers (SOP, In-Shop, VehicleID) that mirror the authors' ``+imdb`` code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import CountCheck, Dataset, Protocol, Split
from reproduce.evaluation.datasets.inshop import load_inshop
from reproduce.evaluation.datasets.products import load_products
from reproduce.evaluation.datasets.vehicleid import load_vehicleid

LOADERS: dict[str, Callable[..., Dataset]] = {
    "products": load_products,
    "inshop": load_inshop,
    "vid": load_vehicleid,
}

__all__ = ["LOADERS", "CountCheck", "Dataset", "Protocol", "Split", "load_dataset",
           "load_inshop", "load_products", "load_vehicleid"]


def load_dataset(name: str, root: str | Path, strict: bool = False,
                 verify: str = "exists") -> Dataset:
    """Read dataset ``name`` (``products``, ``inshop`` or ``vid``) from ``root``."""
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](root, strict=strict, verify=verify)
