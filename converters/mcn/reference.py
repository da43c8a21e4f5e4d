"""The reference executor: a MatConvNet network run in numpy with MatConvNet's semantics.

This is the oracle every conversion is checked against. It shares nothing with the PyTorch
side but the checked layer specs (:mod:`converters.mcn.layer_specs`): the kernels
(:mod:`converters.mcn.reference_layers`) are plain numpy in MATLAB order.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from converters.errors import MatConvNetError
from converters.mcn.array_order import as_4d
from converters.mcn.layer_specs import NetworkPlan, plan_network
from converters.mcn.net import McnNet
from converters.mcn.reference_layers import run_layer

logger = logging.getLogger(__name__)


def network_inputs(net: McnNet) -> list[str]:
    """Names of the vars the network reads but no executed layer produces (e.g. ``data``)."""
    return plan_network(net).inputs


def _check_inputs(net: McnNet, plan: NetworkPlan, inputs: dict[str, np.ndarray],
                  dtype: np.dtype) -> dict[str, np.ndarray]:
    """The given inputs as 4-D arrays of ``dtype``; a missing or malformed one is an error."""
    source = net.source or "network"
    missing = [name for name in plan.inputs if name not in inputs]
    if missing:
        raise MatConvNetError(f"{source}: no value given for input var(s) {missing} "
                              f"(the network reads {plan.inputs})")
    values: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.number) or array.ndim > 4:
            raise MatConvNetError(f"{source}: input {name!r} must be a numeric H x W x C x N "
                                  f"array, got dtype {array.dtype}, shape {list(array.shape)}")
        values[name] = np.ascontiguousarray(as_4d(array), dtype=dtype)
    return values


def run_reference(net: McnNet, inputs: dict[str, np.ndarray], *,
                  dtype: type | np.dtype = np.float64) -> dict[str, np.ndarray]:
    """Run ``net`` on ``inputs`` (MATLAB layout, H x W x C x N) and return every variable.

    Layers run in dependency order (not file order); loss layers are skipped, so their
    outputs are absent. The result maps each var name (inputs included) to a 4-D array of
    ``dtype`` in MATLAB layout. Unsupported layer types, bad params, missing inputs and
    incompatible sizes raise :class:`MatConvNetError` naming the file and layer.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    plan = plan_network(net)
    values = _check_inputs(net, plan, inputs, dtype)
    source = net.source or "network"
    for step in tqdm(plan.steps, desc="reference", unit="layer", disable=None, leave=False):
        layer = step.layer
        where = f"{source}: layer {layer.name!r} ({layer.type})"
        out = run_layer(step.spec, [values[var] for var in layer.inputs], where)
        values[layer.outputs[0]] = out
        logger.debug("%s -> %s %s", where, layer.outputs[0], list(out.shape))
    return values
