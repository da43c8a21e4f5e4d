"""Read MatConvNet ``.mat`` files, run them with MatConvNet's semantics, convert them to PyTorch.

Entry points: ``load_mat`` (any MAT version to a plain tree), ``read_network`` (a file to a
``McnNet`` described by MatConvNet names), ``run_reference`` (the numpy oracle),
``convert_network`` (to PyTorch, with a ``ModelCard``), ``save_model``/``load_model``/
``read_card`` (the converted ``.pt`` or ``.safetensors`` file). They are imported on first
use, so ``import converters`` stays light (torch loads only when a torch entry point does).
"""

from __future__ import annotations

import importlib
from typing import Any

from converters.errors import FastAPReproError, MatConvNetError
from converters.mcn.net import McnLayer, McnNet, McnParam, McnVar

_LAZY = {
    "load_mat": "converters.matio.read",
    "save_mat": "converters.matio.write",
    "read_network": "converters.mcn.reader",
    "run_reference": "converters.mcn.reference",
    "convert_network": "converters.fastap.convert",
    "save_model": "converters.fastap.model_file",
    "load_model": "converters.fastap.model_file",
    "read_card": "converters.fastap.model_file",
    "ModelCard": "converters.fastap.card",
}

__all__ = ["FastAPReproError", "MatConvNetError", "McnLayer", "McnNet", "McnParam", "McnVar",
           *_LAZY]


def __getattr__(name: str) -> Any:
    """Import an entry point from the module that defines it on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
