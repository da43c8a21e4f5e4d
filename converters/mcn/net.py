"""A MatConvNet network described by its MatConvNet names (the contract every converter shares).

Arrays stay in MATLAB order (H x W x C x N activations, kh x kw x Cin x Cout filters);
the conversion to PyTorch order happens once, in the torch builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class McnVar:
    """One entry of ``net.vars``."""

    name: str
    precious: bool = False


@dataclass
class McnParam:
    """One entry of ``net.params``: ``value`` in MATLAB order, trailing singletons as stored."""

    name: str
    value: np.ndarray
    learningRate: float = 1.0
    weightDecay: float = 1.0


@dataclass
class McnLayer:
    """One entry of ``net.layers``.

    ``type`` is the MATLAB class name as saved (``dagnn.Conv``, ``FastAP``); SimpleNN layers
    are normalised to their DagNN class names with generated var names. ``block`` holds the
    layer's saved properties as a plain dict (``{}`` for a field-less struct).
    """

    name: str
    type: str
    inputs: list[str]
    outputs: list[str]
    params: list[str]
    block: dict[str, Any] = field(default_factory=dict)


@dataclass
class McnNet:
    """A whole network plus what the file carried beside it.

    ``source`` is the file path, ``format`` the MAT version (``"v5"`` for v5/v7, ``"v7.3"``),
    ``layout`` one of ``"dagnn"``, ``"dagnn-struct"`` (a ``-struct`` save), ``"simplenn"``.
    ``stats`` is the checkpoint's ``stats`` tree (or None); ``state`` the optimizer state,
    read only on request (None otherwise).
    """

    layers: list[McnLayer]
    params: dict[str, McnParam]
    vars: list[McnVar]
    meta: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    source: str = ""
    format: str = ""
    layout: str = "dagnn"

    def layer(self, name: str) -> McnLayer:
        """The layer called ``name`` (KeyError naming it if absent)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in {self.source or 'network'}")

    def layer_names(self) -> list[str]:
        """Layer names in file order."""
        return [layer.name for layer in self.layers]

    def param_count(self) -> int:
        """Total number of stored parameter values."""
        return int(sum(p.value.size for p in self.params.values()))
