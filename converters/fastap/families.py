"""FastAP checkpoints as torchvision ResNets: family detection, the adapted model, weight mapping.

A FastAP network (docs/pipeline.md, section 2) is a base ResNet followed by ``fc``
(``dagnn.Conv`` [1 1 in D]), ``L2norm`` (``dagnn.LRN`` [2D 0 1 0.5]) and the ``FastAP`` loss.
Three base families are recognised from the names in the file:

- ``resnet18-pt-mcn``: torchvision's resnet18 imported by mcnPyTorch (``features_0`` ...);
- ``resnet50-pt-mcn``: the same importer on resnet50 (bottlenecks with ``_conv3``);
- ``imagenet-resnet-50-dag``: Kaiming He's Caffe ResNet-50 imported by MatConvNet
  (``conv1`` with a bias, ``pool1`` padded [0 1 0 1], stride on the 1x1 ``branch2a``).

The PyTorch side is torchvision's ``resnet18``/``resnet50`` (``weights=None``), adapted where
the Caffe model differs, plus an ``nn.Linear`` for ``fc`` and an exact L2 normalisation.
Every stored parameter is used exactly once; any missing, unused, wrongly shaped parameter
or unexpected layer stops the conversion with a ``MatConvNetError`` naming it.

BatchNorm is folded exactly: MatConvNet computes ``y = mult / sigma * (x - mu) + bias`` with
``sigma`` stored (both importers stored ``sqrt(var + 1e-5)``) and no test-time epsilon; its
CPU kernel (``bnorm_cpu.cpp``) forms ``coefficient = multipliers / sigma`` and then
``coefficient * (x - mean) + bias``. We set ``running_mean = mu``, ``running_var = 1``,
``eps = 0`` and ``weight = mult / sigma`` (divided in float64, rounded once to float32).
PyTorch's inference kernel forms ``alpha = weight / sqrt(running_var + eps)``, which is
``weight`` exactly because ``sqrt(1 + 0) = 1``, i.e. the same coefficient MatConvNet uses, and
then ``alpha * x + (bias - mu * alpha)``: the only difference from MatConvNet is the order of
that last subtraction (float32 rounding). Setting ``running_var = sigma^2`` instead would add
two roundings (square, then square root) to the coefficient. Consequence: the converted
BatchNorm layers are meant for inference; fine-tuning in train mode would need ``eps > 0``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from converters.errors import MatConvNetError
from converters.fastap.run_options import LOSS_TYPE
from converters.matio.values import to_floats, to_str
from converters.mcn.array_order import filter_to_torch
from converters.mcn.net import McnLayer, McnNet

log = logging.getLogger(__name__)

FAMILY_RESNET18_PT = "resnet18-pt-mcn"
FAMILY_RESNET50_PT = "resnet50-pt-mcn"
FAMILY_RESNET50_CAFFE = "imagenet-resnet-50-dag"
#: Channels of each torchvision trunk's pooled output (the ``fc`` input).
BASE_DIM = {"resnet18": 512, "resnet50": 2048}
# stage letters of the Caffe ResNet-50 blocks (res2a .. res5c)
CAFFE_BLOCK_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# the input size the pooling head assumes (avg pool 7x7/1 on a 7x7 map)
INPUT_SIZE = (224, 224)

HEAD_FC = "fc"
HEAD_L2NORM = "L2norm"

# parameter-free layer types a FastAP ResNet may hold
_PARAMLESS_TYPES = {"dagnn.ReLU", "dagnn.Pooling", "dagnn.Sum", "dagnn.Permute",
                    "dagnn.Flatten", "dagnn.LRN", LOSS_TYPE}


@dataclass(frozen=True)
class PoolSpec:
    """The MatConvNet pooling a torchvision layer stands for."""

    method: str
    poolSize: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]


@dataclass
class FamilyLayout:
    """Which MatConvNet layer maps to which torch module, for one family and one model."""

    family: str
    convs: dict[str, nn.Conv2d] = field(default_factory=dict)
    bns: dict[str, nn.BatchNorm2d] = field(default_factory=dict)
    pools: dict[str, PoolSpec] = field(default_factory=dict)
    # names of other layers the family requires (with their type)
    extra: dict[str, str] = field(default_factory=dict)
    base_output_layer: str = ""
    first_conv: str = ""
    first_bn: str = ""
    num_relu: int = 0
    num_sum: int = 0


def _has(net: McnNet, *names: str) -> bool:
    """Whether every one of ``names`` is a stored param of ``net``."""
    return all(name in net.params for name in names)


def detect_family(net: McnNet) -> str:
    """The base family of a FastAP network: the first ``FAMILY_SPECS`` signature it carries.

    Raises MatConvNetError naming the signature params it looked for when none fits.
    """
    for spec in FAMILY_SPECS.values():
        if _has(net, *spec.signature):
            return spec.name
    sample = ", ".join(net.layer_names()[:6])
    wanted = "; ".join(f"{', '.join(repr(s) for s in spec.signature)} ({spec.name})"
                       for spec in FAMILY_SPECS.values())
    raise MatConvNetError(
        f"{net.source or 'network'}: not a FastAP ResNet: expected the params {wanted}; "
        f"first layers are: {sample}")


def is_fastap_network(net: McnNet) -> bool:
    """Whether ``net`` carries the FastAP head (a ``FastAP`` loss layer or ``fc`` + ``L2norm``)."""
    names = set(net.layer_names())
    has_loss = any(layer.type == LOSS_TYPE for layer in net.layers)
    return has_loss or {HEAD_FC, HEAD_L2NORM} <= names


class L2Normalize(nn.Module):
    """``x / sqrt(sum(x^2))`` over channels: MatConvNet LRN [2D 0 1 0.5], no epsilon."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each row (dim 1) to unit L2 norm; a zero row gives NaN as in MATLAB."""
        return x / torch.sqrt((x * x).sum(dim=1, keepdim=True))


class FastAPEmbedding(nn.Module):
    """A FastAP embedding network: torchvision ResNet trunk, ``fc`` Linear, L2 normalisation.

    ``forward(x)`` takes float32 N x 3 x 224 x 224 network input (RGB, 0-255 scale, mean image
    already subtracted) and returns the L2-normalised N x D embeddings (MatConvNet's
    ``feats_l2``). ``var_names`` maps ``base``/``logits``/``feats`` to the MatConvNet var names.
    """

    def __init__(self, family: str, base: ResNet, fc: nn.Linear, var_names: dict[str, str]):
        super().__init__()
        self.family = family
        self.base = base
        self.fc = fc
        self.l2norm = L2Normalize()
        self.var_names = dict(var_names)
        self.in_dim = fc.in_features
        self.embedding_dim = fc.out_features

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The base network's pooled output, N x C (MatConvNet's 1x1xCxN base output)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected float input N x 3 x H x W, got shape {tuple(x.shape)}")
        pooled = self.base(x)
        if pooled.shape[1] != self.in_dim:
            raise ValueError(
                f"input {tuple(x.shape[2:])} does not give a 1x1 map after pooling; "
                f"{self.family} FastAP models take {INPUT_SIZE[0]}x{INPUT_SIZE[1]} input")
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised N x D embeddings."""
        return self.l2norm(self.fc(self._trunk(x)))

    def mcn_outputs(self, x: torch.Tensor | dict[str, torch.Tensor], *,
                    intermediate: bool = True) -> dict[str, torch.Tensor]:
        """MatConvNet vars computed on ``x``, in NCHW order (N x C x H x W), keyed by var name.

        ``x`` is the input tensor or ``{"data": tensor}`` (as ``McnModule.mcn_outputs`` takes).
        Always the base output, ``logits`` and ``feats_l2`` (as N x C x 1 x 1); with
        ``intermediate`` also the output of every convolution and BatchNorm layer (under the
        var name of that layer's output).
        """
        if isinstance(x, dict):
            if len(x) != 1:
                raise ValueError(f"a FastAP model has one input ('data'), got {sorted(x)}")
            x = next(iter(x.values()))
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if intermediate:
            for module, var in getattr(self, "_module_vars", {}).items():
                handles.append(module.register_forward_hook(_capture(captured, var)))
        try:
            base = self._trunk(x)
            logits = self.fc(base)
            feats = self.l2norm(logits)
        finally:
            for handle in handles:
                handle.remove()
        captured[self.var_names["base"]] = base[:, :, None, None]
        captured[self.var_names["logits"]] = logits[:, :, None, None]
        captured[self.var_names["feats"]] = feats[:, :, None, None]
        return captured

    def set_module_vars(self, module_vars: dict[nn.Module, str]) -> None:
        """Remember which MatConvNet var each conv/BN module's output is (for ``mcn_outputs``)."""
        self._module_vars = dict(module_vars)


def _capture(store: dict[str, torch.Tensor], var: str) -> Any:
    """A forward hook that keeps a copy of the module's output (ReLUs work in place)."""
    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        store[var] = output.detach().clone()
    return hook


def _set_bn_exact(model: nn.Module) -> None:
    """Give every BatchNorm ``eps = 0`` (MatConvNet has no test-time epsilon; see module doc)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0


def family_spec(family: str) -> FamilySpec:
    """The table entry of ``family``; an unknown name is an error listing the known ones."""
    if family not in FAMILY_SPECS:
        raise MatConvNetError(f"unknown FastAP family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILY_SPECS[family]


def build_trunk(family: str) -> ResNet:
    """The torchvision ResNet of ``family`` (random init), adapted to the MatConvNet layout.

    Every family: classifier removed (``fc = Identity``), the head pooling MatConvNet's avg
    pool 7x7/1, BatchNorm ``eps = 0``; then the family's own adaptations (``FamilySpec.adapt``).
    """
    spec = family_spec(family)
    model = getattr(torchvision.models, spec.arch)(weights=None)
    model.fc = nn.Identity()
    model.avgpool = nn.AvgPool2d(kernel_size=7, stride=1)
    spec.adapt(model)
    _set_bn_exact(model)
    return model


def _adapt_caffe(model: ResNet) -> None:
    """Caffe ResNet-50: ``conv1`` with a bias, ``pool1`` as a -inf pad [top 0, bottom 1,
    left 0, right 1] + 3x3/2 max pool, and the stride of the first bottleneck of stages 3-5
    on the 1x1 ``conv1`` instead of the 3x3 ``conv2`` (Caffe ResNet v1)."""
    model.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
    # nn.ConstantPad2d takes (left, right, top, bottom)
    model.maxpool = nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), float("-inf")),
                                  nn.MaxPool2d(kernel_size=3, stride=2))
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        first.conv1.stride = (2, 2)
        first.conv2.stride = (1, 1)


def _adapt_none(model: ResNet) -> None:
    """pt-mcn models were imported from torchvision itself: nothing to adapt."""


def build_model(family: str, embedding_dim: int, var_names: dict[str, str] | None = None,
                *, fc_bias: bool = True) -> FastAPEmbedding:
    """An untrained ``FastAPEmbedding`` with the structure of ``family`` (weights random)."""
    trunk = build_trunk(family)
    fc = nn.Linear(family_spec(family).base_dim, int(embedding_dim), bias=fc_bias)
    names = var_names or {"base": family_layout(family, trunk).base_output_layer,
                          "logits": "logits", "feats": "feats_l2"}
    return FastAPEmbedding(family, trunk, fc, names)


def family_layout(family: str, model: ResNet) -> FamilyLayout:
    """The MatConvNet layer name of every torch module of ``model`` for ``family``."""
    layout = FamilyLayout(family)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    family_spec(family).name_layers(layout, model, stages)
    blocks = [block for stage in stages for block in stage]
    layout.num_sum = len(blocks)
    per_block = 3 if isinstance(blocks[0], Bottleneck) else 2
    layout.num_relu = 1 + per_block * len(blocks)
    return layout


def _caffe_layers(layout: FamilyLayout, model: ResNet, stages: tuple[nn.Sequential, ...]
                  ) -> None:
    """Caffe ResNet-50 names: ``conv1``/``bn_conv1``, ``res2a_branch2a`` ... ``pool5``."""
    layout.convs["conv1"] = model.conv1
    layout.bns["bn_conv1"] = model.bn1
    layout.first_conv, layout.first_bn = "conv1", "bn_conv1"
    layout.pools["pool1"] = PoolSpec("max", (3, 3), (2, 2), (0, 1, 0, 1))
    layout.pools["pool5"] = PoolSpec("avg", (7, 7), (1, 1), (0, 0, 0, 0))
    layout.base_output_layer = "pool5"
    for s, stage in enumerate(stages, start=2):
        for b, block in enumerate(stage):
            tag = f"{s}{CAFFE_BLOCK_LETTERS[b]}"
            for branch, conv, bn in (("2a", block.conv1, block.bn1),
                                     ("2b", block.conv2, block.bn2),
                                     ("2c", block.conv3, block.bn3)):
                layout.convs[f"res{tag}_branch{branch}"] = conv
                layout.bns[f"bn{tag}_branch{branch}"] = bn
            if block.downsample is not None:
                layout.convs[f"res{tag}_branch1"] = block.downsample[0]
                layout.bns[f"bn{tag}_branch1"] = block.downsample[1]


def _pt_mcn_layers(layout: FamilyLayout, model: ResNet, stages: tuple[nn.Sequential, ...]
                   ) -> None:
    """mcnPyTorch names: ``features_0``/``features_1``, ``features_4_0_conv1`` ... ."""
    layout.convs["features_0"] = model.conv1
    layout.bns["features_1"] = model.bn1
    layout.first_conv, layout.first_bn = "features_0", "features_1"
    layout.pools["features_3"] = PoolSpec("max", (3, 3), (2, 2), (1, 1, 1, 1))
    layout.pools["features_8"] = PoolSpec("avg", (7, 7), (1, 1), (0, 0, 0, 0))
    layout.extra = {"classifier_permute": "dagnn.Permute",
                    "classifier_flatten": "dagnn.Flatten"}
    layout.base_output_layer = "classifier_flatten"
    for s, stage in enumerate(stages, start=4):
        for b, block in enumerate(stage):
            tag = f"features_{s}_{b}"
            pairs = [(1, block.conv1, block.bn1), (2, block.conv2, block.bn2)]
            if isinstance(block, Bottleneck):
                pairs.append((3, block.conv3, block.bn3))
            for k, conv, bn in pairs:
                layout.convs[f"{tag}_conv{k}"] = conv
                layout.bns[f"{tag}_bn{k}"] = bn
            if block.downsample is not None:
                layout.convs[f"{tag}_downsample_0"] = block.downsample[0]
                layout.bns[f"{tag}_downsample_1"] = block.downsample[1]


@dataclass(frozen=True)
class FamilySpec:
    """Everything that distinguishes one FastAP base family, in one place.

    ``signature``: params whose presence identifies the family (the table is tried in order,
    so a more specific signature comes first); ``arch``: the torchvision constructor;
    ``adapt``: changes to the torchvision trunk; ``name_layers``: fills a ``FamilyLayout``
    with the MatConvNet layer name of every module.
    """

    name: str
    arch: str
    signature: tuple[str, ...]
    adapt: Callable[[ResNet], None]
    name_layers: Callable[[FamilyLayout, ResNet, tuple[nn.Sequential, ...]], None]
    description: str = ""

    @property
    def base_dim(self) -> int:
        """Channels of the pooled trunk output (the ``fc`` input)."""
        return BASE_DIM[self.arch]


#: The FastAP base families, in detection order (the one table every other view derives from).
FAMILY_SPECS: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec(FAMILY_RESNET50_CAFFE, "resnet50",
               ("conv1_filter", "bn_conv1_moments", "res2a_branch2a_filter"),
               _adapt_caffe, _caffe_layers,
               "Kaiming He's Caffe ResNet-50 imported by MatConvNet"),
    FamilySpec(FAMILY_RESNET50_PT, "resnet50",
               ("features_0_filter", "features_1_moments", "features_4_0_conv1_filter",
                "features_4_0_conv3_filter"),
               _adapt_none, _pt_mcn_layers, "torchvision resnet50 imported by mcnPyTorch"),
    FamilySpec(FAMILY_RESNET18_PT, "resnet18",
               ("features_0_filter", "features_1_moments", "features_4_0_conv1_filter"),
               _adapt_none, _pt_mcn_layers, "torchvision resnet18 imported by mcnPyTorch"),
)}
#: Family names, and each family's torchvision architecture (views of ``FAMILY_SPECS``).
FAMILIES = tuple(FAMILY_SPECS)
ARCH = {name: spec.arch for name, spec in FAMILY_SPECS.items()}


class _ParamBook:
    """Hands out a network's params by name and remembers which were used (exactly once)."""

    def __init__(self, net: McnNet):
        self.net = net
        self.where = net.source or "network"
        self.used: Counter[str] = Counter()

    def take(self, layer: McnLayer, index: int, expected: tuple[int, ...],
             role: str) -> np.ndarray:
        """Param ``index`` of ``layer`` as float64, checked against MATLAB shape ``expected``."""
        if index >= len(layer.params):
            raise MatConvNetError(
                f"{self.where}: layer {layer.name!r} lists {len(layer.params)} params; "
                f"its {role} (param {index + 1}) is missing")
        name = layer.params[index]
        if name not in self.net.params:
            raise MatConvNetError(
                f"{self.where}: layer {layer.name!r} uses param {name!r} ({role}), "
                "which is not stored in the file")
        self.used[name] += 1
        if self.used[name] > 1:
            raise MatConvNetError(f"{self.where}: param {name!r} is used by more than one layer")
        value = np.asarray(self.net.params[name].value)
        if not _shape_fits(value.shape, expected):
            raise MatConvNetError(
                f"{self.where}: param {name!r} ({role} of layer {layer.name!r}) has shape "
                f"{_fmt(value.shape)}, expected {_fmt(expected)}")
        if not np.all(np.isfinite(value)):
            raise MatConvNetError(f"{self.where}: param {name!r} holds NaN or Inf values")
        return value.astype(np.float64).reshape(expected)

    def check_all_used(self) -> None:
        """Raise naming every stored param no layer of the conversion used."""
        unused = [name for name in self.net.params if self.used[name] == 0]
        if unused:
            shown = ", ".join(repr(n) for n in unused[:10])
            more = f" and {len(unused) - 10} more" if len(unused) > 10 else ""
            raise MatConvNetError(
                f"{self.where}: {len(unused)} stored param(s) not used by the FastAP "
                f"conversion: {shown}{more}")


def _fmt(shape: Iterable[int]) -> str:
    """A shape written the MATLAB way, ``3x3x64x64``."""
    return "x".join(str(int(d)) for d in shape) or "scalar"


def _strip(shape: Iterable[int]) -> tuple[int, ...]:
    """``shape`` without trailing singleton dimensions (MATLAB drops them)."""
    dims = list(shape)
    while dims and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


def _shape_fits(stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Whether a stored MATLAB array has shape ``expected`` up to dropped trailing singletons.

    Vectors (``expected`` C x 1) also fit as 1 x C or (C,), which MATLAB files hold alike.
    """
    if _strip(stored) == _strip(expected):
        return True
    if len(_strip(expected)) <= 1:
        size = int(np.prod(expected))
        return int(np.prod(stored)) == size and sum(d != 1 for d in stored) <= 1
    return False


def _block_ints(layer: McnLayer, key: str, where: str) -> tuple[int, ...] | None:
    """An integer vector from a layer's block (None when the block lacks it)."""
    if key not in layer.block:
        return None
    try:
        return tuple(int(round(v)) for v in to_floats(layer.block[key]))
    except (TypeError, ValueError) as exc:
        raise MatConvNetError(f"{where}: layer {layer.name!r}: bad {key!r} ({exc})") from exc


def _block_floats(layer: McnLayer, key: str, default: list[float], where: str) -> list[float]:
    """A numeric block field as floats (``default`` when absent or empty); bad ones named."""
    value = layer.block.get(key)
    if value is None or np.size(value) == 0:
        return list(default)
    try:
        return to_floats(value)
    except (TypeError, ValueError) as exc:
        raise MatConvNetError(f"{where}: layer {layer.name!r}: bad {key!r} ({exc})") from exc


def _has_bias(layer: McnLayer, where: str) -> bool:
    """The block's ``hasBias`` (DagNN's default: true)."""
    return bool(_block_floats(layer, "hasBias", [1.0], where)[0])


def _expand(values: tuple[int, ...], n: int) -> tuple[int, ...]:
    """MatConvNet's scalar-or-vector hyperparameters expanded to ``n`` entries."""
    return values * n if len(values) == 1 else values


def _check_conv(layer: McnLayer, conv: nn.Conv2d, where: str) -> None:
    """The block of a ``dagnn.Conv`` must describe exactly ``conv`` (size, stride, pad, bias)."""
    _check_type(layer, "dagnn.Conv", where)
    cout, cin, kh, kw = conv.weight.shape
    want = {"size": (kh, kw, cin, cout), "stride": tuple(conv.stride),
            "pad": (conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1]),
            "dilate": tuple(conv.dilation)}
    for key, expected in want.items():
        got = _block_ints(layer, key, where)
        if got is None:
            if key == "dilate":
                continue
            raise MatConvNetError(f"{where}: layer {layer.name!r} has no {key!r} in its block")
        got = _expand(got, len(expected)) if key != "size" else got
        if _strip(got) != _strip(expected):
            raise MatConvNetError(
                f"{where}: layer {layer.name!r}: {key} is [{' '.join(map(str, got))}], the "
                f"torchvision layout needs [{' '.join(map(str, expected))}]")
    has_bias = _has_bias(layer, where)
    if has_bias != (conv.bias is not None):
        raise MatConvNetError(
            f"{where}: layer {layer.name!r}: hasBias is {has_bias}, the torchvision layout "
            f"{'has' if conv.bias is not None else 'has no'} bias there")


def _check_type(layer: McnLayer, expected: str, where: str) -> None:
    """Raise unless ``layer`` has type ``expected``."""
    if layer.type != expected:
        raise MatConvNetError(
            f"{where}: layer {layer.name!r} has type {layer.type!r}, expected {expected!r}")


def _check_pool(layer: McnLayer, spec: PoolSpec, where: str) -> None:
    """The block of a ``dagnn.Pooling`` must match ``spec``."""
    _check_type(layer, "dagnn.Pooling", where)
    try:
        method = to_str(layer.block.get("method", "max"))
    except ValueError as exc:
        raise MatConvNetError(f"{where}: layer {layer.name!r}: bad 'method' ({exc})") from exc
    if method != spec.method:
        raise MatConvNetError(
            f"{where}: layer {layer.name!r}: pooling method {method!r}, expected {spec.method!r}")
    for key, expected, default in (("poolSize", spec.poolSize, (1,)),
                                   ("stride", spec.stride, (1,)),
                                   ("pad", spec.pad, (0,))):
        got = _block_ints(layer, key, where) or default
        got = _expand(got, len(expected))
        if got != expected:
            raise MatConvNetError(
                f"{where}: layer {layer.name!r}: {key} is [{' '.join(map(str, got))}], "
                f"expected [{' '.join(map(str, expected))}]")


def _load_conv(book: _ParamBook, layer: McnLayer, conv: nn.Conv2d, path: str,
               state: dict[str, torch.Tensor]) -> None:
    """A ``dagnn.Conv``'s filter (and bias) as the state entries of ``conv`` at ``path``."""
    cout, cin, kh, kw = conv.weight.shape
    weight = book.take(layer, 0, (kh, kw, cin, cout), "filter")
    state[f"{path}.weight"] = _tensor(filter_to_torch(weight), conv.weight)
    expected_params = 1
    if conv.bias is not None:
        bias = book.take(layer, 1, (cout, 1), "bias")
        state[f"{path}.bias"] = _tensor(bias.ravel(), conv.bias)
        expected_params = 2
    _check_param_count(layer, expected_params, book.where)


def _load_bn(book: _ParamBook, layer: McnLayer, bn: nn.BatchNorm2d, path: str,
             state: dict[str, torch.Tensor]) -> None:
    """A ``dagnn.BatchNorm`` (mult, bias, moments [mu sigma]) folded exactly into the state
    entries of ``bn`` at ``path``."""
    _check_type(layer, "dagnn.BatchNorm", book.where)
    c = bn.num_features
    mult = book.take(layer, 0, (c, 1), "mult").ravel()
    bias = book.take(layer, 1, (c, 1), "bias").ravel()
    moments = book.take(layer, 2, (c, 2), "moments")
    _check_param_count(layer, 3, book.where)
    mu, sigma = moments[:, 0], moments[:, 1]
    if np.any(sigma <= 0):
        bad = int(np.flatnonzero(sigma <= 0)[0])
        raise MatConvNetError(
            f"{book.where}: param {layer.params[2]!r}: sigma of channel {bad + 1} is "
            f"{sigma[bad]}, must be positive")
    state[f"{path}.weight"] = _tensor(mult / sigma, bn.weight)
    state[f"{path}.bias"] = _tensor(bias, bn.bias)
    state[f"{path}.running_mean"] = _tensor(mu, bn.running_mean)
    state[f"{path}.running_var"] = torch.ones_like(bn.running_var)
    state[f"{path}.num_batches_tracked"] = torch.zeros_like(bn.num_batches_tracked)


def _tensor(value: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A float64 numpy array as a tensor of ``like``'s dtype (one rounding, if any)."""
    return torch.from_numpy(np.ascontiguousarray(value)).to(like.dtype)


def _check_param_count(layer: McnLayer, count: int, where: str) -> None:
    """Raise when ``layer`` lists more params than its torch counterpart has."""
    if len(layer.params) > count:
        extra = ", ".join(repr(p) for p in layer.params[count:])
        raise MatConvNetError(
            f"{where}: layer {layer.name!r} lists unexpected param(s) {extra}")


def _check_l2norm(layer: McnLayer, dim: int, where: str) -> None:
    """``L2norm`` must be an LRN that normalises all ``dim`` channels exactly."""
    _check_type(layer, "dagnn.LRN", where)
    param = _block_floats(layer, "param", [], where)
    if len(param) != 4:
        raise MatConvNetError(f"{where}: layer {layer.name!r}: LRN param {param} is not 4 values")
    n, kappa, alpha, beta = param
    if n < 2 * dim - 1 or kappa != 0 or alpha != 1 or beta != 0.5:
        raise MatConvNetError(
            f"{where}: layer {layer.name!r}: LRN param {param} is not an L2 normalisation "
            f"over {dim} channels (expected [{2 * dim} 0 1 0.5])")


def _check_flattening(layer: McnLayer, where: str) -> None:
    """pt-mcn's Permute + Flatten must amount to ``x.view(N, -1)`` on the 1x1 pooled map.

    On a 1 x 1 x C x N map any permutation of the first three dims keeps the values in place,
    but one that moves the batch dim (or a flatten onto another axis) does not.
    """
    if layer.type == "dagnn.Permute":
        order = [int(v) for v in _block_floats(layer, "order", [], where)]
        order += [d for d in (1, 2, 3, 4) if d not in order]
        if sorted(order) != [1, 2, 3, 4] or order[3] != 4:
            raise MatConvNetError(f"{where}: layer {layer.name!r}: permute order {order} "
                                  "does not keep the batch dim 4 in place")
    elif layer.type == "dagnn.Flatten":
        axis = _block_floats(layer, "axis", [3.0], where)
        if axis != [3.0]:
            raise MatConvNetError(f"{where}: layer {layer.name!r}: flatten axis {axis}, "
                                  "expected 3 (channels)")


def _check_relu(layer: McnLayer, where: str) -> None:
    """ResNet ReLUs have no leak."""
    leak = _block_floats(layer, "leak", [0.0], where)
    if leak and leak[0] != 0:
        raise MatConvNetError(f"{where}: layer {layer.name!r}: ReLU leak {leak[0]} is not 0")


def convert_fastap(net: McnNet, family: str | None = None, *,
                   dtype: torch.dtype = torch.float32) -> FastAPEmbedding:
    """The ``FastAPEmbedding`` equal to ``net`` (a FastAP checkpoint), every param used once.

    ``dtype`` is the precision of the weights (float64 keeps the BatchNorm fold ``mult / sigma``
    unrounded, for checks far tighter than float32). Raises MatConvNetError naming the layer
    or param at fault for anything unexpected.
    """
    where = net.source or "network"
    family = family or detect_family(net)
    names = set(net.layer_names())
    for layer in net.layers:
        if len(layer.outputs) != 1:
            raise MatConvNetError(f"{where}: layer {layer.name!r} ({layer.type}) must have "
                                  f"exactly one output, got {layer.outputs}")
    for required in (HEAD_FC, HEAD_L2NORM):
        if required not in names:
            raise MatConvNetError(f"{where}: FastAP head layer {required!r} is missing")
    fc_layer = net.layer(HEAD_FC)
    _check_type(fc_layer, "dagnn.Conv", where)
    size = _block_ints(fc_layer, "size", where)
    if size is None or len(size) != 4 or size[:2] != (1, 1):
        raise MatConvNetError(f"{where}: layer 'fc': size {size} is not [1 1 in D]")
    dim = size[3]
    fc_bias = _has_bias(fc_layer, where)
    trunk = build_trunk(family)
    layout = family_layout(family, trunk)
    base_var = _base_output_var(net, layout, where)
    var_names = {"base": base_var, "logits": fc_layer.outputs[0],
                 "feats": net.layer(HEAD_L2NORM).outputs[0]}
    fc = nn.Linear(family_spec(family).base_dim, dim, bias=fc_bias)
    model = FastAPEmbedding(family, trunk, fc, var_names).to(dtype)
    book = _ParamBook(net)
    paths = {module: name for name, module in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    module_vars: dict[nn.Module, str] = {}
    seen = Counter(layer.type for layer in net.layers)
    for layer in net.layers:
        role = _layer_role(layer, layout)
        if role == "conv":
            conv = layout.convs[layer.name]
            _check_conv(layer, conv, where)
            _load_conv(book, layer, conv, paths[conv], state)
            module_vars[conv] = layer.outputs[0]
        elif role == "bn":
            bn = layout.bns[layer.name]
            _load_bn(book, layer, bn, paths[bn], state)
            module_vars[bn] = layer.outputs[0]
        elif role == "fc":
            _load_fc(book, layer, fc, where, state)
        else:
            _CHECKS[role](layer, layout, dim, where)
        if layer.type not in ("dagnn.Conv", "dagnn.BatchNorm") and layer.params:
            raise MatConvNetError(
                f"{where}: layer {layer.name!r} ({layer.type}) lists unexpected params "
                f"{', '.join(repr(p) for p in layer.params)}")
    _check_all_present(net, layout, where)
    for kind, count in (("dagnn.ReLU", layout.num_relu), ("dagnn.Sum", layout.num_sum)):
        if seen[kind] != count:
            raise MatConvNetError(
                f"{where}: {seen[kind]} {kind} layers, a {family} network has {count}")
    book.check_all_used()
    model.load_state_dict(state, strict=True)
    model.set_module_vars(module_vars)
    model.eval()
    log.info("converted %s (%s, D=%d): %d params mapped", where, family, dim, len(book.used))
    return model


def _layer_role(layer: McnLayer, layout: FamilyLayout) -> str:
    """What a layer is in the conversion: by its name in the family layout, else by type."""
    for role, names in (("conv", layout.convs), ("bn", layout.bns), ("pool", layout.pools),
                        ("extra", layout.extra)):
        if layer.name in names:
            return role
    if layer.name in (HEAD_FC, HEAD_L2NORM):
        return {HEAD_FC: "fc", HEAD_L2NORM: "l2norm"}[layer.name]
    if layer.type == "dagnn.ReLU":
        return "relu"
    if layer.type in ("dagnn.Sum", LOSS_TYPE):
        return "free"
    return "unexpected-paramless" if layer.type in _PARAMLESS_TYPES else "unknown"


def _unexpected_paramless(layer: McnLayer, layout: FamilyLayout, _dim: int, where: str) -> None:
    raise MatConvNetError(f"{where}: unexpected {layer.type} layer {layer.name!r} in a "
                          f"{layout.family} FastAP network")


def _unknown(layer: McnLayer, layout: FamilyLayout, _dim: int, where: str) -> None:
    raise MatConvNetError(
        f"{where}: layer {layer.name!r} has type {layer.type!r}, which is not part of a "
        f"{layout.family} FastAP network (unexpected layer)")


def _check_extra(layer: McnLayer, layout: FamilyLayout, _dim: int, where: str) -> None:
    _check_type(layer, layout.extra[layer.name], where)
    _check_flattening(layer, where)


#: The checks of the parameter-free roles (``conv``, ``bn`` and ``fc`` carry weights).
_CHECKS: dict[str, Callable[[McnLayer, FamilyLayout, int, str], None]] = {
    "pool": lambda layer, layout, _dim, where: _check_pool(layer, layout.pools[layer.name],
                                                           where),
    "l2norm": lambda layer, _layout, dim, where: _check_l2norm(layer, dim, where),
    "extra": _check_extra,
    "relu": lambda layer, _layout, _dim, where: _check_relu(layer, where),
    "free": lambda *_: None,
    "unexpected-paramless": _unexpected_paramless,
    "unknown": _unknown,
}


def _base_output_var(net: McnNet, layout: FamilyLayout, where: str) -> str:
    """The var the head reads: the base output layer's output, which ``fc`` must take."""
    if layout.base_output_layer not in net.layer_names():
        raise MatConvNetError(
            f"{where}: base output layer {layout.base_output_layer!r} of a {layout.family} "
            "network is missing")
    base_var = net.layer(layout.base_output_layer).outputs[0]
    fc_inputs = net.layer(HEAD_FC).inputs
    if fc_inputs != [base_var]:
        raise MatConvNetError(
            f"{where}: layer 'fc' reads {fc_inputs}, expected the base output [{base_var!r}]")
    l2_inputs = net.layer(HEAD_L2NORM).inputs
    if l2_inputs != net.layer(HEAD_FC).outputs:
        raise MatConvNetError(
            f"{where}: layer 'L2norm' reads {l2_inputs}, expected fc's output "
            f"{net.layer(HEAD_FC).outputs}")
    return base_var


def _load_fc(book: _ParamBook, layer: McnLayer, fc: nn.Linear, where: str,
             state: dict[str, torch.Tensor]) -> None:
    """``fc_w`` [1 1 in D] and ``fc_b`` [D 1] as the state entries of the Linear ``fc``."""
    size = (1, 1, fc.in_features, fc.out_features)
    got = _block_ints(layer, "size", where)
    if got != size:
        raise MatConvNetError(
            f"{where}: layer 'fc': size [{' '.join(map(str, got or ()))}], expected "
            f"[{' '.join(map(str, size))}] (base output has {fc.in_features} channels)")
    for key, expected in (("stride", (1, 1)), ("pad", (0, 0, 0, 0))):
        value = _block_ints(layer, key, where)
        if value is not None and _expand(value, len(expected)) != expected:
            raise MatConvNetError(f"{where}: layer 'fc': {key} {value}, expected {expected}")
    weight = book.take(layer, 0, size, "filter")
    state["fc.weight"] = _tensor(weight[0, 0].T, fc.weight)
    if fc.bias is not None:
        bias = book.take(layer, 1, (fc.out_features, 1), "bias")
        state["fc.bias"] = _tensor(bias.ravel(), fc.bias)
        _check_param_count(layer, 2, where)
    else:
        _check_param_count(layer, 1, where)


def _check_all_present(net: McnNet, layout: FamilyLayout, where: str) -> None:
    """Raise naming the first layer the family needs that the file lacks."""
    names = set(net.layer_names())
    for name in [*layout.convs, *layout.bns, *layout.pools, *layout.extra]:
        if name not in names:
            raise MatConvNetError(
                f"{where}: layer {name!r} of a {layout.family} network is missing")
