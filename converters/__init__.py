"""Read MatConvNet ``.mat`` files, run them with MatConvNet's semantics, convert them to PyTorch.

Public entry points are re-exported here as the modules that define them land:
``load_mat`` (matfile), ``McnNet`` (mcn_net), ``load_model`` (model_file).
"""

from __future__ import annotations

from converters.errors import MatConvNetError
from converters.mcn_net import McnLayer, McnNet, McnParam, McnVar

__all__ = ["MatConvNetError", "McnLayer", "McnNet", "McnParam", "McnVar"]
