"""Typed, checked views of MatConvNet layers, and the order a network runs them in.

Both executors (the numpy reference and the PyTorch module) read layers through here, so
block fields, parameter shapes and the execution order are interpreted once. Field names and
defaults are DagNN's (``matlab/+dagnn/*.m`` in MatConvNet 1.0-beta25, ``Permute``/``Flatten``
from mcnExtraLayers). Parameter values stay in MATLAB order, reshaped (column-major, as
MATLAB stores them) to the shape the layer's ``size`` promises; the kernels only see checked
arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.errors import MatConvNetError
from converters.matio import values as matvalues
from converters.mcn.net import McnLayer, McnNet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvSpec:
    """``dagnn.Conv``: ``filters`` kh x kw x Cin/groups x Cout (groups = Cin / size(3))."""

    filters: np.ndarray
    bias: np.ndarray | None
    pad: tuple[int, int, int, int]  # top bottom left right
    stride: tuple[int, int]  # sy sx
    dilate: tuple[int, int]  # dy dx


@dataclass(frozen=True)
class ConvTransposeSpec:
    """``dagnn.ConvTranspose`` (``vl_nnconvt``): ``filters`` FH x FW x K x D; K*groups outputs."""

    filters: np.ndarray
    bias: np.ndarray | None
    upsample: tuple[int, int]
    crop: tuple[int, int, int, int]  # top bottom left right
    groups: int


@dataclass(frozen=True)
class BatchNormSpec:
    """``dagnn.BatchNorm`` in test mode: ``y = mult / sigma * (x - mu) + bias``, no epsilon."""

    mult: np.ndarray
    bias: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


@dataclass(frozen=True)
class PoolingSpec:
    """``dagnn.Pooling``: windows clipped to the input (max: -inf padding; avg: in-bounds count)."""

    method: str  # 'max' | 'avg'
    pool_size: tuple[int, int]
    pad: tuple[int, int, int, int]
    stride: tuple[int, int]


@dataclass(frozen=True)
class ReLUSpec:
    """``dagnn.ReLU``: ``y = x`` where ``x > 0``, else ``leak * x``."""

    leak: float


@dataclass(frozen=True)
class LRNSpec:
    """``dagnn.LRN`` (``vl_nnnormalize``), ``param = [N kappa alpha beta]``, alpha not divided by N.

    ``y_k = x_k (kappa + alpha * sum_{q in G(k)} x_q^2)^(-beta)`` with
    ``G(k) = [k - before, k + after]`` clipped to the channels.
    """

    depth: int
    kappa: float
    alpha: float
    beta: float

    @property
    def before(self) -> int:
        """Channels the window reaches below k: ``floor((N - 1) / 2)``."""
        return (self.depth - 1) // 2

    @property
    def after(self) -> int:
        """Channels the window reaches above k: ``N - 1 - before``."""
        return self.depth - 1 - self.before


@dataclass(frozen=True)
class SumSpec:
    """``dagnn.Sum``: elementwise sum of all inputs."""


@dataclass(frozen=True)
class ConcatSpec:
    """``dagnn.Concat``: ``dim`` is MATLAB's 1-based dimension (3 = channels)."""

    dim: int


@dataclass(frozen=True)
class PermuteSpec:
    """``dagnn.Permute`` (mcnExtraLayers): MATLAB ``permute(x, order)``, ``order`` 1-based."""

    order: tuple[int, int, int, int]


@dataclass(frozen=True)
class FlattenSpec:
    """``dagnn.Flatten`` (mcnExtraLayers): H*W*C values moved, column-major, onto ``axis``."""

    axis: int


@dataclass(frozen=True)
class DropOutSpec:
    """``dagnn.DropOut``: the identity in test mode."""


@dataclass(frozen=True)
class SoftMaxSpec:
    """``dagnn.SoftMax``: softmax over channels."""


LayerSpec = (
    ConvSpec | ConvTransposeSpec | BatchNormSpec | PoolingSpec | ReLUSpec | LRNSpec | SumSpec
    | ConcatSpec | PermuteSpec | FlattenSpec | DropOutSpec | SoftMaxSpec
)


@dataclass(frozen=True)
class LayerStep:
    """One layer to execute: its description and its checked spec."""

    layer: McnLayer
    spec: LayerSpec


@dataclass(frozen=True)
class NetworkPlan:
    """A network ready to run.

    ``steps`` in dependency order; ``inputs`` the vars no executed layer produces;
    ``outputs`` the vars produced and consumed by no executed layer; ``skipped`` the loss
    layers left out.
    """

    steps: list[LayerStep]
    inputs: list[str]
    outputs: list[str]
    skipped: list[str]


def is_loss_type(layer_type: str) -> bool:
    """Whether a layer type is a loss (skipped in inference): ``FastAP`` or ``*Loss*`` classes."""
    short = layer_type.rsplit(".", 1)[-1].lower()
    return "loss" in short or short == "fastap"


class _LayerReader:
    """Reads one layer's block fields and params, raising errors that name file, layer, field."""

    def __init__(self, net: McnNet, layer: McnLayer) -> None:
        self.net = net
        self.layer = layer

    def where(self) -> str:
        """Prefix naming the file and layer for messages."""
        source = self.net.source or "network"
        return f"{source}: layer {self.layer.name!r} ({self.layer.type})"

    def fail(self, message: str) -> MatConvNetError:
        """An error about this layer."""
        return MatConvNetError(f"{self.where()}: {message}")

    def field(self, name: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
        """Block field ``name`` through ``convert``; ``default`` when absent or empty."""
        value = self.layer.block.get(name)
        if value is None or (isinstance(value, np.ndarray) and value.size == 0):
            if default is None:
                raise self.fail(f"block has no field {name!r}")
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(f"block field {name!r}: {exc}") from exc

    def ints(self, name: str, counts: tuple[int, ...], default: list[int]) -> tuple[int, ...]:
        """Integer vector field; a scalar is repeated to the longest allowed length."""
        values = self.field(name, matvalues.to_ints, default)
        if len(values) == 1:
            values = values * max(counts)
        if len(values) not in counts:
            raise self.fail(f"block field {name!r} has {len(values)} values, expected one of "
                            f"{sorted({1, *counts})}")
        return tuple(values)

    def param(self, index: int, *, optional: bool = False) -> np.ndarray | None:
        """Value of the layer's ``index``-th param (None when empty and ``optional``).

        An empty bias is MatConvNet's "no bias"; a param missing from the layer's list is an
        error (DagNN would fail on it too).
        """
        if index >= len(self.layer.params):
            raise self.fail(f"expected at least {index + 1} params, got {self.layer.params}")
        name = self.layer.params[index]
        if name not in self.net.params:
            raise self.fail(f"param {name!r} is not in the network's params")
        value = np.asarray(self.net.params[name].value)
        if value.size == 0 and optional:
            return None
        if not np.issubdtype(value.dtype, np.number):
            raise self.fail(f"param {name!r} is not numeric (dtype {value.dtype})")
        return value

    def param_shaped(self, index: int, shape: tuple[int, ...], *, optional: bool = False
                     ) -> np.ndarray | None:
        """The ``index``-th param reshaped column-major to ``shape`` (element count checked)."""
        value = self.param(index, optional=optional)
        if value is None:
            return None
        expected = int(np.prod(shape))
        if value.size != expected:
            name = self.layer.params[index]
            raise self.fail(f"param {name!r} has shape {list(value.shape)} ({value.size} values); "
                            f"the layer needs {list(shape)} ({expected} values)")
        return np.reshape(value, shape, order="F")

    def filter_size(self, filters_index: int = 0) -> tuple[int, int, int, int]:
        """The filter param's shape padded to 4 dims, checked against the block's ``size``.

        MatConvNet computes with the filter array as stored (``size`` only initialises it),
        so a filter whose shape differs from ``size`` is an error, not something to reshape:
        reshaping a 3x3x4x2 filter to a ``size`` of [3 3 2 4] would run a network MatConvNet
        does not run.
        """
        value = self.param(filters_index)
        assert value is not None
        name = self.layer.params[filters_index]
        if value.ndim > 4:
            raise self.fail(f"param {name!r} has {value.ndim} dims")
        shape = tuple(int(n) for n in value.shape) + (1,) * (4 - value.ndim)
        size = self.layer.block.get("size")
        if size is not None and np.size(size) == 4 and np.all(np.asarray(size) > 0):
            declared = tuple(self.ints("size", (4,), [0, 0, 0, 0]))
            if declared != shape:
                raise self.fail(f"param {name!r} has shape {list(value.shape)} "
                                f"({value.size} values); the layer's size is {list(declared)}")
        return shape  # type: ignore[return-value]

    def has_bias(self) -> bool:
        """``hasBias`` (default true)."""
        return bool(self.field("hasBias", matvalues.to_bool, True))


def _conv(r: _LayerReader) -> ConvSpec:
    size = r.filter_size()
    filters = r.param_shaped(0, size)
    bias = r.param_shaped(1, (size[3],), optional=True) if r.has_bias() else None
    dilate = r.ints("dilate", (2,), [1])
    stride = r.ints("stride", (2,), [1])
    pad = r.ints("pad", (4,), [0])
    if min(stride) < 1 or min(dilate) < 1 or min(pad) < 0:
        raise r.fail(f"invalid stride {list(stride)}, dilate {list(dilate)} or pad {list(pad)}")
    assert filters is not None
    return ConvSpec(filters, bias, pad, stride, dilate)  # type: ignore[arg-type]


def _conv_transpose(r: _LayerReader) -> ConvTransposeSpec:
    size = r.filter_size()
    groups = r.field("numGroups", matvalues.to_int, 1)
    if groups < 1 or size[3] % groups:
        raise r.fail(f"numGroups {groups} does not divide the filter depth {size[3]}")
    filters = r.param_shaped(0, size)
    bias = r.param_shaped(1, (size[2] * groups,), optional=True) if r.has_bias() else None
    upsample = r.ints("upsample", (2,), [1])
    crop = r.ints("crop", (4,), [0])
    if min(upsample) < 1 or min(crop) < 0:
        raise r.fail(f"invalid upsample {list(upsample)} or crop {list(crop)}")
    assert filters is not None
    return ConvTransposeSpec(filters, bias, upsample, crop, groups)  # type: ignore[arg-type]


def _batch_norm(r: _LayerReader) -> BatchNormSpec:
    mult = r.param(0)
    assert mult is not None
    channels = mult.size
    bias = r.param_shaped(1, (channels,))
    # vl_nnbnorm reads the moments' memory as [mu(1..C) sigma(1..C)]: column-major C x 2
    moments = r.param_shaped(2, (channels, 2))
    assert bias is not None and moments is not None
    return BatchNormSpec(mult.ravel(order="F"), bias, moments[:, 0], moments[:, 1])


def _pooling(r: _LayerReader) -> PoolingSpec:
    method = r.field("method", matvalues.to_str, "max")
    if method not in ("max", "avg"):
        raise r.fail(f"pooling method {method!r} is neither 'max' nor 'avg'")
    dilate = r.ints("dilate", (2,), [1])
    if dilate != (1, 1):
        raise r.fail(f"pooling with dilate {list(dilate)} is not supported")
    pool_size = r.ints("poolSize", (2,), [1])
    stride = r.ints("stride", (2,), [1])
    pad = r.ints("pad", (4,), [0])
    if min(pool_size) < 1 or min(stride) < 1 or min(pad) < 0:
        raise r.fail(f"invalid poolSize {list(pool_size)}, stride {list(stride)} "
                     f"or pad {list(pad)}")
    return PoolingSpec(method, pool_size, pad, stride)  # type: ignore[arg-type]


def _relu(r: _LayerReader) -> ReLUSpec:
    return ReLUSpec(float(r.field("leak", matvalues.to_float, 0.0)))


def _lrn(r: _LayerReader) -> LRNSpec:
    param = r.field("param", matvalues.to_floats, [5.0, 1.0, 1e-4, 0.75])
    if len(param) != 4 or param[0] < 1 or param[0] != int(param[0]):
        raise r.fail(f"param must be [N kappa alpha beta] with a positive integer N, got {param}")
    return LRNSpec(int(param[0]), param[1], param[2], param[3])


def _concat(r: _LayerReader) -> ConcatSpec:
    dim = r.field("dim", matvalues.to_int, 3)
    if dim not in (1, 2, 3, 4):
        raise r.fail(f"concatenation dim {dim} is not one of 1..4")
    return ConcatSpec(dim)


def _permute(r: _LayerReader) -> PermuteSpec:
    order = r.field("order", matvalues.to_ints)
    order = list(order) + [d for d in (1, 2, 3, 4) if d not in order]
    if sorted(order) != [1, 2, 3, 4]:
        raise r.fail(f"order {order} is not a permutation of 1..4")
    return PermuteSpec(tuple(order))  # type: ignore[arg-type]


def _flatten(r: _LayerReader) -> FlattenSpec:
    axis = r.field("axis", matvalues.to_int, 3)
    if axis not in (1, 2, 3):
        raise r.fail(f"flatten axis {axis} is not 1, 2 or 3")
    return FlattenSpec(axis)


_PARSERS: dict[str, Callable[[_LayerReader], LayerSpec]] = {
    "dagnn.Conv": _conv,
    "dagnn.ConvTranspose": _conv_transpose,
    "dagnn.BatchNorm": _batch_norm,
    "dagnn.Pooling": _pooling,
    "dagnn.ReLU": _relu,
    "dagnn.LRN": _lrn,
    "dagnn.Sum": lambda r: SumSpec(),
    "dagnn.Concat": _concat,
    "dagnn.Permute": _permute,
    "dagnn.Flatten": _flatten,
    "dagnn.DropOut": lambda r: DropOutSpec(),
    "dagnn.SoftMax": lambda r: SoftMaxSpec(),
}

SUPPORTED_TYPES = tuple(sorted(_PARSERS))

# (min, max) number of inputs each type takes; None = no upper bound
_ARITY: dict[type, tuple[int, int | None]] = {SumSpec: (1, None), ConcatSpec: (1, None)}


def layer_spec(net: McnNet, layer: McnLayer) -> LayerSpec:
    """The checked spec of one (non-loss) layer; unsupported types raise MatConvNetError."""
    reader = _LayerReader(net, layer)
    parser = _PARSERS.get(layer.type)
    if parser is None:
        raise reader.fail(f"unsupported layer type {layer.type!r} (supported: "
                          f"{', '.join(SUPPORTED_TYPES)}; loss layers are skipped)")
    spec = parser(reader)
    low, high = _ARITY.get(type(spec), (1, 1))
    if len(layer.inputs) < low or (high is not None and len(layer.inputs) > high):
        raise reader.fail(f"takes {low}{'+' if high is None else ''} input(s), got {layer.inputs}")
    if len(layer.outputs) != 1:
        raise reader.fail(f"must have exactly one output, got {layer.outputs}")
    return spec


def plan_network(net: McnNet) -> NetworkPlan:
    """Check every layer and order them so each runs after the layers producing its inputs.

    Loss layers (:func:`is_loss_type`) are skipped; their outputs are not computed. Ties keep
    file order. A var produced twice, a cycle, or a layer reading a skipped loss's output is a
    MatConvNetError.
    """
    source = net.source or "network"
    kept = [layer for layer in net.layers if not is_loss_type(layer.type)]
    skipped = [layer for layer in net.layers if is_loss_type(layer.type)]
    specs = {id(layer): layer_spec(net, layer) for layer in kept}

    producer: dict[str, McnLayer] = {}
    for layer in kept:
        for var in layer.outputs:
            if var in producer:
                raise MatConvNetError(f"{source}: var {var!r} is produced by both layer "
                                      f"{producer[var].name!r} and layer {layer.name!r}")
            producer[var] = layer
    loss_outputs = {var: layer.name for layer in skipped for var in layer.outputs}

    inputs: list[str] = []
    for layer in kept:
        for var in layer.inputs:
            if var in loss_outputs:
                raise MatConvNetError(f"{source}: layer {layer.name!r} reads {var!r}, the output "
                                      f"of the skipped loss layer {loss_outputs[var]!r}")
            if var not in producer and var not in inputs:
                inputs.append(var)

    available = set(inputs)
    pending = list(kept)
    steps: list[LayerStep] = []
    while pending:
        ready = next((layer for layer in pending if all(v in available for v in layer.inputs)),
                     None)
        if ready is None:
            names = [layer.name for layer in pending]
            raise MatConvNetError(f"{source}: layers {names} depend on each other in a cycle")
        pending.remove(ready)
        steps.append(LayerStep(ready, specs[id(ready)]))
        available.update(ready.outputs)

    consumed = {var for layer in kept for var in layer.inputs}
    outputs = [var for step in steps for var in step.layer.outputs if var not in consumed]
    logger.debug("%s: %d layers to run, %d loss layers skipped, inputs %s, outputs %s",
                 source, len(steps), len(skipped), inputs, outputs)
    return NetworkPlan(steps, inputs, outputs, [layer.name for layer in skipped])
