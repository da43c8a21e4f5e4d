"""Any network of supported MatConvNet layers as a PyTorch ``nn.Module`` running the same graph.

Activations are N x C x H x W tensors; weights are converted from MATLAB order once, at
construction, by :func:`converters.mcn.array_order.filter_to_torch`. The ops reproduce MatConvNet's
semantics where PyTorch's defaults differ: asymmetric pads through ``F.pad``, pooling
windows clipped to the input (max: -inf padding; avg: sum over the in-bounds count), batch
normalisation from stored moments without epsilon, exact LRN with alpha not divided by N,
column-major Flatten and MATLAB-order Permute.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import nn

from converters.errors import MatConvNetError
from converters.mcn.array_order import (
    MATLAB_TO_TORCH_DIM,
    filter_to_torch,
    matlab_to_torch,
    reshape_column_major,
    torch_to_matlab,
)
from converters.mcn.layer_specs import (
    BatchNormSpec,
    ConcatSpec,
    ConvSpec,
    ConvTransposeSpec,
    DropOutSpec,
    FlattenSpec,
    LayerSpec,
    LRNSpec,
    PermuteSpec,
    PoolingSpec,
    ReLUSpec,
    SoftMaxSpec,
    SumSpec,
    plan_network,
)
from converters.mcn.net import McnNet

logger = logging.getLogger(__name__)


def _tensor(value: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A numpy array as a contiguous tensor of ``dtype``."""
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)


def _channel_vector(value: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A per-channel vector shaped 1 x C x 1 x 1 for broadcasting over N x C x H x W."""
    return _tensor(np.asarray(value).ravel(order="F"), dtype).reshape(1, -1, 1, 1)


def _torch_pad(pad: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """MatConvNet [top bottom left right] as ``F.pad``'s (left, right, top, bottom)."""
    top, bottom, left, right = pad
    return (left, right, top, bottom)


class McnConv(nn.Module):
    """``dagnn.Conv``: pad (asymmetric allowed), stride, dilation, groups = Cin / filter depth."""

    def __init__(self, spec: ConvSpec, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(_tensor(filter_to_torch(spec.filters), dtype))
        self.bias = (nn.Parameter(_tensor(spec.bias.ravel(order="F"), dtype))
                     if spec.bias is not None else None)
        self.pad, self.stride, self.dilate = spec.pad, spec.stride, spec.dilate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-correlate ``x`` with the filter bank."""
        top, bottom, left, right = self.pad
        if top == bottom and left == right:
            padding: tuple[int, int] = (top, left)
        else:
            x, padding = F.pad(x, _torch_pad(self.pad)), (0, 0)
        groups = x.shape[1] // self.weight.shape[1]
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=padding,
                        dilation=self.dilate, groups=groups)


class McnConvTranspose(nn.Module):
    """``dagnn.ConvTranspose``: ``conv_transpose2d`` with stride = upsample, then the crop."""

    def __init__(self, spec: ConvTransposeSpec, dtype: torch.dtype) -> None:
        super().__init__()
        # FH x FW x K x D -> D x K x FH x FW, which is conv_transpose2d's (in, out/groups, kh, kw)
        self.weight = nn.Parameter(_tensor(filter_to_torch(spec.filters), dtype))
        self.bias = (nn.Parameter(_tensor(spec.bias.ravel(order="F"), dtype))
                     if spec.bias is not None else None)
        self.upsample, self.crop, self.groups = spec.upsample, spec.crop, spec.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transposed convolution, then crop [top bottom left right]."""
        y = F.conv_transpose2d(x, self.weight, self.bias, stride=self.upsample,
                               groups=self.groups)
        top, bottom, left, right = self.crop
        return y[:, :, top: y.shape[2] - bottom, left: y.shape[3] - right]


class McnBatchNorm(nn.Module):
    """``dagnn.BatchNorm`` in test mode: ``mult / sigma * (x - mu) + bias``, no epsilon."""

    def __init__(self, spec: BatchNormSpec, dtype: torch.dtype) -> None:
        super().__init__()
        self.mult = nn.Parameter(_channel_vector(spec.mult, dtype))
        self.bias = nn.Parameter(_channel_vector(spec.bias, dtype))
        self.register_buffer("mu", _channel_vector(spec.mu, dtype))
        self.register_buffer("sigma", _channel_vector(spec.sigma, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the stored moments."""
        return self.mult / self.sigma * (x - self.mu) + self.bias


class McnPooling(nn.Module):
    """``dagnn.Pooling``: windows clipped to the input, as MatConvNet's ``pooling_cpu.cpp``."""

    def __init__(self, spec: PoolingSpec) -> None:
        super().__init__()
        self.method, self.pool_size = spec.method, spec.pool_size
        self.pad, self.stride = spec.pad, spec.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max (padding -inf) or average over in-bounds cells only."""
        pad = _torch_pad(self.pad)
        if self.method == "max":
            return F.max_pool2d(F.pad(x, pad, value=float("-inf")), self.pool_size, self.stride)
        total = F.avg_pool2d(F.pad(x, pad), self.pool_size, self.stride, divisor_override=1)
        ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)
        count = F.avg_pool2d(F.pad(ones, pad), self.pool_size, self.stride, divisor_override=1)
        return total / count


class McnReLU(nn.Module):
    """``dagnn.ReLU`` with ``leak``."""

    def __init__(self, spec: ReLUSpec) -> None:
        super().__init__()
        self.leak = spec.leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` where positive, ``leak * x`` elsewhere."""
        return F.relu(x) if self.leak == 0 else F.leaky_relu(x, self.leak)


class McnLRN(nn.Module):
    """``dagnn.LRN``: ``x_k (kappa + alpha sum_{G(k)} x_q^2)^(-beta)``, exact (no approximation)."""

    def __init__(self, spec: LRNSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise across the channel window."""
        spec, sq = self.spec, x * x
        channels = x.shape[1]
        if spec.before >= channels - 1 and spec.after >= channels - 1:
            window = sq.sum(dim=1, keepdim=True)
        else:
            # zero-pad the channel axis, then add the N shifted copies
            padded = F.pad(sq, (0, 0, 0, 0, spec.before, spec.after))
            window = sum(padded[:, q: q + channels] for q in range(spec.depth))
        return x * (spec.kappa + spec.alpha * window) ** (-spec.beta)


class McnSum(nn.Module):
    """``dagnn.Sum``."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """Elementwise sum of the inputs."""
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class McnConcat(nn.Module):
    """``dagnn.Concat`` along MATLAB dim ``dim`` (3 = channels)."""

    def __init__(self, spec: ConcatSpec) -> None:
        super().__init__()
        self.dim = MATLAB_TO_TORCH_DIM[spec.dim - 1]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """Concatenate the inputs."""
        return torch.cat(xs, dim=self.dim)


class McnPermute(nn.Module):
    """``dagnn.Permute``: MATLAB ``permute(x, order)`` carried out on the MATLAB-order view."""

    def __init__(self, spec: PermuteSpec) -> None:
        super().__init__()
        self.order = tuple(d - 1 for d in spec.order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Permute the H x W x C x N view and return it in N x C x H x W."""
        return matlab_to_torch(torch_to_matlab(x).permute(*self.order))


class McnFlatten(nn.Module):
    """``dagnn.Flatten`` (``vl_nnflatten``): H*W*C values, column-major, onto ``axis``."""

    def __init__(self, spec: FlattenSpec) -> None:
        super().__init__()
        self.axis = spec.axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Column-major reshape of the H x W x C x N view."""
        batch, channels, height, width = x.shape
        shape = [1, 1, 1, batch]
        shape[self.axis - 1] = height * width * channels
        return matlab_to_torch(reshape_column_major(torch_to_matlab(x), tuple(shape)))


class McnSoftMax(nn.Module):
    """``dagnn.SoftMax`` over channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over dim 1."""
        return torch.softmax(x, dim=1)


#: Layer spec type -> the module computing it (given the spec and the weights' dtype).
MODULES: dict[type, Callable[[Any, torch.dtype], nn.Module]] = {
    ConvSpec: McnConv,
    ConvTransposeSpec: McnConvTranspose,
    BatchNormSpec: McnBatchNorm,
    PoolingSpec: lambda spec, _dtype: McnPooling(spec),
    ReLUSpec: lambda spec, _dtype: McnReLU(spec),
    LRNSpec: lambda spec, _dtype: McnLRN(spec),
    SumSpec: lambda _spec, _dtype: McnSum(),
    ConcatSpec: lambda spec, _dtype: McnConcat(spec),
    PermuteSpec: lambda spec, _dtype: McnPermute(spec),
    FlattenSpec: lambda spec, _dtype: McnFlatten(spec),
    SoftMaxSpec: lambda _spec, _dtype: McnSoftMax(),
    DropOutSpec: lambda _spec, _dtype: nn.Identity(),
}


def layer_module(spec: LayerSpec, dtype: torch.dtype) -> nn.Module:
    """The PyTorch module computing one checked MatConvNet layer (from ``MODULES``)."""
    make = MODULES.get(type(spec))
    if make is None:
        raise TypeError(f"no module for {type(spec).__name__}")
    return make(spec, dtype)


def _module_key(name: str, taken: set[str]) -> str:
    """A ``ModuleDict`` key for a MatConvNet layer name (no dots, unique, non-empty)."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "layer"
    base, n = key, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


class McnModule(nn.Module):
    """A MatConvNet network (``McnNet``) as an ``nn.Module`` running the same graph.

    Loss layers are left out; every other layer must be of a supported type (else
    :class:`MatConvNetError` naming layer and type, at construction). Inputs and outputs are
    N x C x H x W tensors keyed by MatConvNet var names. ``forward(x)`` (one-input networks)
    or ``forward(**inputs)`` returns the network output (the var no layer consumes), or a
    dict of them when there are several; :meth:`mcn_outputs` returns every var.
    """

    def __init__(self, net: McnNet, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        plan = plan_network(net)
        self.source = net.source
        self.input_names: list[str] = plan.inputs
        self.output_names: list[str] = plan.outputs
        self.layers = nn.ModuleDict()
        taken: set[str] = set()
        # (module key, MatConvNet layer name, input vars, output var), in execution order
        self.graph: list[tuple[str, str, list[str], str]] = []
        for step in plan.steps:
            key = _module_key(step.layer.name, taken)
            self.layers[key] = layer_module(step.spec, dtype)
            self.graph.append((key, step.layer.name, list(step.layer.inputs),
                               step.layer.outputs[0]))
        last_use: dict[str, int] = {}
        for index, (_, _, inputs, _) in enumerate(self.graph):
            for var in inputs:
                last_use[var] = index
        self._last_use = last_use
        logger.debug("%s: %d layers, inputs %s, outputs %s", self.source, len(self.graph),
                     self.input_names, self.output_names)

    def _run(self, inputs: dict[str, torch.Tensor], keep_all: bool) -> dict[str, torch.Tensor]:
        """Execute the graph; without ``keep_all`` each var is dropped after its last reader."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise MatConvNetError(f"{self.source or 'network'}: no value given for input var(s) "
                                  f"{missing} (the network reads {self.input_names})")
        values = dict(inputs)
        for index, (key, name, in_vars, out_var) in enumerate(self.graph):
            try:
                values[out_var] = self.layers[key](*(values[var] for var in in_vars))
            except RuntimeError as exc:
                raise MatConvNetError(f"{self.source or 'network'}: layer {name!r}: {exc}") from exc
            if not keep_all:
                for var in in_vars:
                    if self._last_use[var] == index and var not in self.output_names:
                        del values[var]
        return values

    def mcn_outputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every var (inputs included) by MatConvNet name, N x C x H x W."""
        return self._run(inputs, keep_all=True)

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The network output for ``x`` (single-input networks) or named inputs."""
        if args:
            if len(args) != 1 or inputs or len(self.input_names) != 1:
                raise TypeError(f"pass one tensor for a single-input network, or the inputs "
                                f"{self.input_names} by name")
            inputs = {self.input_names[0]: args[0]}
        values = self._run(inputs, keep_all=False)
        if len(self.output_names) == 1:
            return values[self.output_names[0]]
        return {name: values[name] for name in self.output_names}
