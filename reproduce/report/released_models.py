"""The ten models the authors released (their README, "Reproducibility"), matched to runs.

Each entry is one FastAP configuration of the paper's Tables 1-3 with the epoch whose
checkpoint was released. A run is matched by its options (``dataset``, ``arch``,
``batchSize``, ``dim``; ``obj`` must be FastAP when present), or, without options, by its
experiment folder ``<dataset>-FastAP-<dim>-<arch>/<prefix>-<nbins>bins-batch<M>-...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_BACKBONES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "googlenet": "GoogLeNet"}
_TABLES = {"products": 1, "inshop": 2, "vid": 3}
_FOLDER = re.compile(r"(?P<dataset>products|inshop|vid)-FastAP-(?P<dim>\d+)-(?P<arch>\w+?)"
                     r"/[^/]*?-?\d+bins-batch(?P<batch>\d+)-")
#: Recall columns of each dataset's table, in the order the evaluation prints them.
METRICS = {
    "products": ["R@1", "R@10", "R@100", "R@1000"],
    "inshop": ["R@1", "R@10", "R@20", "R@30", "R@40", "R@50"],
    "vid": ["small R@1", "small R@5", "medium R@1", "medium R@5", "large R@1", "large R@5"],
}


@dataclass(frozen=True)
class ReleasedModel:
    """One released checkpoint: configuration and the epoch it was taken at."""

    dataset: str
    arch: str
    batch_size: int
    dim: int
    epoch: int

    @property
    def table(self) -> int:
        """The paper's table number (1 products, 2 inshop, 3 vid)."""
        return _TABLES[self.dataset]

    @property
    def backbone(self) -> str:
        """The backbone as the paper and ``published_results.csv`` spell it."""
        return _BACKBONES[self.arch]

    @property
    def key(self) -> str:
        """A short unique name, e.g. ``products-resnet50-M256-D512``."""
        return f"{self.dataset}-{self.arch}-M{self.batch_size}-D{self.dim}"

    @property
    def exp_id(self) -> str:
        """The experiment folder's first part, as ``get_opts.m`` builds it."""
        return f"{self.dataset}-FastAP-{self.dim}-{self.arch}"

    @property
    def checkpoint(self) -> str:
        """The released checkpoint's file name."""
        return f"net-epoch-{self.epoch}.mat"


RELEASED_MODELS: tuple[ReleasedModel, ...] = (
    ReleasedModel("products", "resnet18", 256, 512, 20),
    ReleasedModel("products", "resnet50", 96, 128, 30),
    ReleasedModel("products", "resnet50", 96, 512, 28),
    ReleasedModel("products", "resnet50", 256, 512, 12),
    ReleasedModel("inshop", "resnet18", 256, 512, 50),
    ReleasedModel("inshop", "resnet50", 96, 512, 40),
    ReleasedModel("inshop", "resnet50", 256, 512, 35),
    ReleasedModel("vid", "resnet18", 256, 512, 50),
    ReleasedModel("vid", "resnet50", 96, 512, 40),
    ReleasedModel("vid", "resnet50", 256, 512, 30),
)


def find_model(dataset: str, arch_or_backbone: str, batch_size: Any, dim: Any
               ) -> ReleasedModel | None:
    """The released model of this configuration (arch ``resnet50`` or backbone ``ResNet-50``)."""
    arch = arch_or_backbone.lower().replace("-", "")
    for model in RELEASED_MODELS:
        if (model.dataset == dataset and model.arch == arch
                and _int(batch_size) == model.batch_size and _int(dim) == model.dim):
            return model
    return None


def match_options(options: Mapping[str, Any]) -> ReleasedModel | None:
    """The released model whose configuration a run's ``disp(opts)`` options describe."""
    if str(options.get("obj", "FastAP")) != "FastAP":
        return None
    needed = ("dataset", "arch", "batchSize", "dim")
    if any(options.get(k) in (None, "") for k in needed):
        return None
    return find_model(str(options["dataset"]), str(options["arch"]), options["batchSize"],
                      options["dim"])


def match_folder(text: str) -> ReleasedModel | None:
    """The released model an experiment-folder path (or run name) names, if any."""
    match = _FOLDER.search(text.replace("\\", "/"))
    if not match:
        return None
    return find_model(match.group("dataset"), match.group("arch"), match.group("batch"),
                      match.group("dim"))


def match_run(options: Mapping[str, Any], name: str = "") -> ReleasedModel | None:
    """Match by options first, then by the folder naming in ``name``."""
    return match_options(options) or (match_folder(name) if name else None)


def _int(value: Any) -> int | None:
    """An integer option value (``256``, ``256.0``, ``"256"``), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None
