"""Dataset readers: SOP, In-Shop, VehicleID (mirroring the authors' ``+imdb`` code),
CUB-200-2011 and Cars196 (the usual class-disjoint split), and any dataset from a list file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reproduce.errors import InputError
from reproduce.evaluation.datasets.cars import load_cars
from reproduce.evaluation.datasets.common import CountCheck, Dataset, Protocol, Split
from reproduce.evaluation.datasets.cub import load_cub
from reproduce.evaluation.datasets.generic import load_list
from reproduce.evaluation.datasets.inshop import load_inshop
from reproduce.evaluation.datasets.products import load_products
from reproduce.evaluation.datasets.vehicleid import load_vehicleid

LOADERS: dict[str, Callable[..., Dataset]] = {
    "products": load_products,
    "inshop": load_inshop,
    "vid": load_vehicleid,
    "cub": load_cub,
    "cars": load_cars,
    "list": load_list,
}

__all__ = ["LOADERS", "CountCheck", "Dataset", "Protocol", "Split", "load_cars", "load_cub",
           "load_dataset", "load_inshop", "load_list", "load_products", "load_vehicleid"]


def load_dataset(name: str, root: str | Path | None, strict: bool = False,
                 verify: str = "exists", **options: Any) -> Dataset:
    """Read dataset ``name`` (a key of :data:`LOADERS`) from ``root``; ``options`` go to its
    reader (``list_file`` for ``list``)."""
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](root, strict=strict, verify=verify, **options)
