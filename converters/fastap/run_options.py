"""What a FastAP checkpoint says about the run that made it: its options and its epoch.

Light on purpose (no torch), so ``fastap inspect`` can show them: the ``FastAP`` loss layer's
``block.opt`` holds the run's whole option struct (docs/pipeline.md, section 1), and the epoch
comes from the file name ``net-epoch-N.mat`` or, for a renamed copy, from ``stats``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from converters.mcn.net import McnNet

#: MatConvNet class name of the authors' loss layer (saved without a package prefix).
LOSS_TYPE = "FastAP"
#: The options ``fastap inspect`` shows first: the ones that tell released models apart.
KEY_OPTIONS = ("dataset", "arch", "dim", "nbins", "batchSize", "lr", "lrmult", "epoch")


def checkpoint_epoch(net: McnNet) -> tuple[int | None, str | None]:
    """The checkpoint's epoch and where it was read (file name ``net-epoch-N``, or stats)."""
    match = re.search(r"net-epoch-(\d+)\.mat$", os.path.basename(net.source or ""))
    if match:
        return int(match.group(1)), "file name"
    train = (net.stats or {}).get("train")
    if isinstance(train, dict):
        return 1, "stats.train (1 epoch)"
    if isinstance(train, list) and train:
        return len(train), f"stats.train ({len(train)} epochs)"
    return None, None


def plain_value(value: Any) -> Any:
    """A MAT tree value as JSON-able data: 1x1 arrays -> scalars, arrays -> flat lists."""
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return value.ravel()[0].item()
        return value.ravel(order="F").tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def loss_options(net: McnNet) -> dict[str, Any] | None:
    """The ``opt`` struct of the ``FastAP`` loss layer (the run's options), JSON-able."""
    for layer in net.layers:
        if layer.type == LOSS_TYPE and isinstance(layer.block.get("opt"), dict):
            return plain_value(layer.block["opt"])
    return None
