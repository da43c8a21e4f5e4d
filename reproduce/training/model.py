"""The network a ``fastap train`` run starts from: a MatConvNet base, a converted model or
torchvision weights, as a :class:`~converters.fastap.families.FastAPEmbedding` whose BatchNorm
layers are MatConvNet's (:class:`~reproduce.training.batchnorm.McnBatchNorm2d`).

- ``--base BASE.mat`` (the authors' way, ``get_model.m``): the ImageNet base network read with
  ``read_network``; every conv and BatchNorm of the family's layout taken by its MatConvNet
  name (BatchNorm ``mult``, ``bias``, ``moments`` exactly, no fold), other layers (the ImageNet
  classifier) ignored; ``fc`` initialised as MatConvNet's ``dagnn.Conv`` init does after
  ``rng(42)``-style seeding: ``randn * sqrt(2 / in_dim)``, bias 0 (our generator is torch's,
  seeded 42, not MATLAB's stream).
- ``--init MODEL.pt``: a converted FastAP model (``fastap convert``); its folded BatchNorm is
  unfolded with ``mu = running_mean``, ``sigma = sqrt(running_var + eps)`` (the same network
  function; see docs/training.md on what the fold loses).
- ``--torchvision-weights FILE``: a torchvision ResNet ``state_dict`` (``torch.load``); BatchNorm
  ``sigma = sqrt(running_var + 1e-5)``; ``fc`` as for ``--base``.

At an ``image_size`` other than 224 the trunk's 7x7 average pool becomes a global average pool
(identical at 224, where the map is 7x7), so small test images give one vector per image.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.errors import MatConvNetError
from converters.fastap.families import (
    FAMILY_RESNET18_PT,
    FAMILY_RESNET50_PT,
    FastAPEmbedding,
    build_model,
    detect_family,
    family_layout,
)
from converters.mcn.array_order import filter_to_torch
from reproduce.errors import InputError
from reproduce.evaluation.preprocess import IMAGENET_MEAN, INPUT_SIZE
from reproduce.training.batchnorm import swap_to_mcn

#: The mcnPyTorch family of each ``--arch`` (the family the export writes).
ARCH_FAMILY = {"resnet18": FAMILY_RESNET18_PT, "resnet50": FAMILY_RESNET50_PT}
FC_SEED = 42


def init_fc(fc: nn.Linear, seed: int = FC_SEED) -> None:
    """``fc`` as MatConvNet initialises a conv: ``randn * sqrt(2 / in_dim)``, bias 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(fc.weight.shape, generator=generator, dtype=torch.float64)
        fc.weight.copy_((w * np.sqrt(2.0 / fc.in_features)).to(fc.weight.dtype))
        if fc.bias is not None:
            fc.bias.zero_()


def _fit_pool(model: FastAPEmbedding, image_size: int) -> None:
    """A global average pool instead of 7x7/1 for inputs other than 224 (same at 224)."""
    if image_size != INPUT_SIZE:
        model.base.avgpool = nn.AdaptiveAvgPool2d(1)


def _check_arch(arch: str) -> str:
    if arch not in ARCH_FAMILY:
        raise InputError(f"--arch {arch}: choose one of {sorted(ARCH_FAMILY)}")
    return ARCH_FAMILY[arch]


def _param(net: object, layer_name: str, index: int, where: str) -> np.ndarray:
    layer = net.layer(layer_name)  # type: ignore[attr-defined]
    if len(layer.params) <= index:
        raise InputError(f"{where}: layer {layer_name!r} lacks param {index + 1}")
    return np.asarray(net.params[layer.params[index]].value, dtype=np.float64)  # type: ignore


def from_base(path: str | os.PathLike[str], arch: str, dim: int) -> tuple[FastAPEmbedding,
                                                                         np.ndarray | None]:
    """A FastAP model on the MatConvNet base network at ``path`` and its ``averageImage``."""
    from converters.fastap.convert import average_image
    from converters.mcn.reader import read_network

    family = _check_arch(arch)
    try:
        net = read_network(path)
        found = detect_family(net)
    except MatConvNetError as exc:
        raise InputError(f"--base {path}: {exc}") from exc
    if found != family:
        raise InputError(f"--base {path}: a {found} network, but --arch {arch} needs "
                         f"{family}")
    model = build_model(family, dim)
    layout = family_layout(family, model.base)
    names = set(net.layer_names())
    missing = [n for n in [*layout.convs, *layout.bns] if n not in names]
    if missing:
        raise InputError(f"--base {path}: layer {missing[0]!r} of a {family} network is "
                         "missing")
    with torch.no_grad():
        for name, conv in layout.convs.items():
            w = filter_to_torch(_param(net, name, 0, str(path)))
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise InputError(f"--base {path}: layer {name!r}: filter {w.shape}, expected "
                                 f"{tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    sources = {}
    modules = {id(m): n for n, m in model.named_modules()}
    for name, bn in layout.bns.items():
        values = [_param(net, name, k, str(path)) for k in range(3)]
        sources[modules[id(bn)]] = (values[0].ravel(), values[1].ravel(),
                                    values[2].reshape(-1, 2, order="F"))
    init_fc(model.fc)
    swap_to_mcn(model, sources=sources)
    return model, average_image(net)


def from_init(path: str | os.PathLike[str], arch: str, dim: int) -> tuple[FastAPEmbedding,
                                                                         np.ndarray | None]:
    """A converted FastAP model (``.pt``/``.safetensors``) with MatConvNet BatchNorm."""
    from converters.fastap.model_file import load_model

    family = _check_arch(arch)
    try:
        model, card = load_model(path)
    except (MatConvNetError, FileNotFoundError) as exc:
        raise InputError(f"--init {path}: {exc}") from exc
    if not isinstance(model, FastAPEmbedding) or model.family != family:
        raise InputError(f"--init {path}: a {getattr(model, 'family', 'generic')} model, but "
                         f"--arch {arch} needs {family}")
    if model.embedding_dim != dim:
        raise InputError(f"--init {path}: embedding dimension {model.embedding_dim}, but "
                         f"--dim {dim}")
    swap_to_mcn(model)
    average = card.input.average_image
    return model, None if average is None else np.asarray(average, np.float32)


def from_torchvision(path: str | os.PathLike[str], arch: str, dim: int
                     ) -> tuple[FastAPEmbedding, np.ndarray]:
    """A FastAP model on a torchvision ResNet ``state_dict``; the ImageNet mean x 255."""
    family = _check_arch(arch)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise InputError(f"--torchvision-weights {path}: cannot read ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"--torchvision-weights {path}: not a state_dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model = build_model(family, dim)
    try:
        model.base.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"--torchvision-weights {path}: does not fit torchvision {arch} "
                         f"({str(exc).splitlines()[0]})") from exc
    for module in model.base.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-5  # torchvision's; build_trunk set the converter's 0
    init_fc(model.fc)
    swap_to_mcn(model)
    return model, np.array(IMAGENET_MEAN, np.float32) * 255.0


SOURCES = {"base": from_base, "init": from_init, "torchvision_weights": from_torchvision}


def build_training_model(source: str, path: str | os.PathLike[str], arch: str, dim: int,
                         image_size: int) -> tuple[FastAPEmbedding, np.ndarray]:
    """The model to train from ``source`` (a key of :data:`SOURCES`) and the average image
    subtracted from its input (the ImageNet mean x 255 when the source records none)."""
    if not Path(path).is_file():
        option = "--" + source.replace("_", "-")
        raise InputError(f"{option} {path}: no such file")
    model, average = SOURCES[source](path, arch, dim)
    _fit_pool(model, image_size)
    if average is None:
        average = np.array(IMAGENET_MEAN, np.float32) * 255.0
    return model, np.asarray(average, np.float32)
