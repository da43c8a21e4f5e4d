"""Read MatConvNet ``.mat`` files, run them with MatConvNet's semantics, convert them to PyTorch.

Entry points: ``load_mat`` (any MAT version to a plain tree), ``read_network`` (a file to a
``McnNet`` described by MatConvNet names), ``run_reference`` (the numpy oracle),
``convert_network`` (to PyTorch, with a ``ModelCard``), ``save_model``/``load_model``/
``read_card`` (the converted ``.pt`` or ``.safetensors`` file). They are imported on first
use, so ``import converters`` stays light (torch loads only when a torch entry point does).
"""

from __future__ import annotations

from converters.errors import FastAPReproError, MatConvNetError
from converters.lazy import lazy_exports
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

__getattr__ = lazy_exports("converters", _LAZY)
