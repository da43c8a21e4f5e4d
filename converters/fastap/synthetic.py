"""Synthetic FastAP checkpoints in the exact ``saveobj`` layout of a ``net-epoch-N.mat``.

``checkpoint_tree(family, ...)`` builds the plain tree (``{"net", "state", "stats"}``) that
``converters.matio.write.save_mat`` writes and ``converters.matio.read.load_mat`` returns, at full
size: every layer, param and var of the base network under its MatConvNet name, then the
FastAP head (docs/pipeline.md, sections 1-2):

- ``fc``: ``dagnn.Conv`` size [1 1 in D], params ``fc_w`` (1x1xinxD), ``fc_b`` (Dx1);
- ``L2norm``: ``dagnn.LRN`` param [2D 0 1 0.5], ``logits`` -> ``feats_l2``;
- ``loss``: type ``FastAP`` (no package), inputs {``feats_l2``, ``labels``}, block ``opt``.

Weights are random (He-scaled filters, random positive BatchNorm sigmas), so the file
exercises the conversion, not a trained model. ``state.solverState`` holds Adam's ``m``,
``v``, ``t`` per param (the in-memory order), ``stats.train``/``stats.val`` one struct per
epoch. ``write_synthetic_checkpoint`` saves it as MAT v7 (scipy) or v7.3 (h5py).

Names of the ``resnet50-pt-mcn`` ReLUs after ``bn2`` (``_relu_1``) are UNCONFIRMED (no such
file was available); the converter does not depend on ReLU names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from converters.fastap.families import (
    CAFFE_BLOCK_LETTERS,
    FAMILIES,
    FAMILY_RESNET18_PT,
    FAMILY_RESNET50_CAFFE,
)
from converters.matio.write import save_mat

# blocks per stage and whether the blocks are bottlenecks
_STAGES = {"resnet18": ((2, 2, 2, 2), False), "resnet50": ((3, 4, 6, 3), True)}
_WIDTHS = (64, 128, 256, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _NetBuilder:
    """Accumulates layers, params and vars in ``DagNN.saveobj`` form."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.layers: list[dict[str, Any]] = []
        self.params: list[dict[str, Any]] = []
        self.var_names: list[str] = ["data"]

    def _param(self, name: str, value: np.ndarray, lr: float, wd: float) -> str:
        self.params.append({"name": name, "value": value.astype(np.float32),
                            "learningRate": float(lr), "weightDecay": float(wd)})
        return name

    def _layer(self, name: str, type_: str, inputs: list[str], output: str,
               params: list[str], block: dict[str, Any]) -> str:
        for var in [*inputs, output]:
            if var not in self.var_names:
                self.var_names.append(var)
        self.layers.append({"name": name, "type": type_, "inputs": list(inputs),
                            "outputs": [output], "params": list(params), "block": block})
        return output

    def conv(self, name: str, x: str, out: str, k: int, cin: int, cout: int, *,
             stride: int = 1, pad: int | tuple[int, int, int, int] = 0, bias: bool = False,
             filter_name: str | None = None, bias_name: str | None = None) -> str:
        """A ``dagnn.Conv`` with He-scaled random filters (kh x kw x Cin x Cout)."""
        std = np.sqrt(2.0 / (k * k * cin))
        names = [self._param(filter_name or f"{name}_filter",
                             self.rng.standard_normal((k, k, cin, cout), np.float32) * std,
                             1.0, 1.0)]
        if bias:
            names.append(self._param(bias_name or f"{name}_bias",
                                     self.rng.standard_normal((cout, 1), np.float32) * 0.1,
                                     2.0, 0.0))
        pads = (pad,) * 4 if isinstance(pad, int) else pad
        block = {"size": np.array([k, k, cin, cout], np.float64), "hasBias": bool(bias),
                 "opts": ["cuDNN"], "pad": np.array(pads, np.float64),
                 "stride": np.array([stride, stride], np.float64),
                 "dilate": np.array([1.0, 1.0])}
        return self._layer(name, "dagnn.Conv", [x], out, names, block)

    def bn(self, name: str, x: str, out: str, c: int) -> str:
        """A ``dagnn.BatchNorm`` with random mult/bias and random positive moments [mu sigma]."""
        mult = self.rng.uniform(0.5, 1.5, (c, 1)).astype(np.float32)
        bias = (self.rng.standard_normal((c, 1)) * 0.1).astype(np.float32)
        mu = self.rng.standard_normal(c) * 0.2
        sigma = self.rng.uniform(0.5, 2.0, c)
        moments = np.stack([mu, sigma], axis=1).astype(np.float32)
        names = [self._param(f"{name}_mult", mult, 2.0, 0.0),
                 self._param(f"{name}_bias", bias, 1.0, 0.0),
                 self._param(f"{name}_moments", moments, 0.1, 0.0)]
        block = {"numChannels": float(c), "epsilon": 1e-5, "opts": ["NoCuDNN"]}
        return self._layer(name, "dagnn.BatchNorm", [x], out, names, block)

    def relu(self, name: str, x: str, out: str) -> str:
        """A ``dagnn.ReLU`` without leak."""
        block = {"useShortCircuit": True, "leak": 0.0, "opts": []}
        return self._layer(name, "dagnn.ReLU", [x], out, [], block)

    def pool(self, name: str, x: str, out: str, method: str, k: int, stride: int,
             pad: tuple[int, int, int, int]) -> str:
        """A ``dagnn.Pooling``."""
        block = {"method": method, "poolSize": np.array([k, k], np.float64), "opts": ["cuDNN"],
                 "pad": np.array(pad, np.float64),
                 "stride": np.array([stride, stride], np.float64)}
        return self._layer(name, "dagnn.Pooling", [x], out, [], block)

    def sum(self, name: str, xs: list[str], out: str) -> str:
        """A ``dagnn.Sum`` (its block is a field-less struct)."""
        return self._layer(name, "dagnn.Sum", xs, out, [], {})

    def other(self, name: str, type_: str, xs: list[str], out: str,
              block: dict[str, Any]) -> str:
        """Any parameter-free layer."""
        return self._layer(name, type_, xs, out, [], block)


def _pt_mcn_base(b: _NetBuilder, arch: str) -> tuple[str, int]:
    """mcnPyTorch's torchvision ResNet (``features_*``); returns (output var, channels)."""
    x = b.conv("features_0", "data", "features_0", 7, 3, 64, stride=2, pad=3)
    x = b.bn("features_1", x, "features_1", 64)
    x = b.relu("features_2", x, "features_2")
    x = b.pool("features_3", x, "features_3", "max", 3, 2, (1, 1, 1, 1))
    counts, bottleneck = _STAGES[arch]
    cin = 64
    for s, (count, width) in enumerate(zip(counts, _WIDTHS, strict=True), start=4):
        for blk in range(count):
            t = f"features_{s}_{blk}"
            stride = 2 if (blk == 0 and s > 4) else 1
            cout = width * 4 if bottleneck else width
            y = b.conv(f"{t}_conv1", x, f"{t}_conv1", 1 if bottleneck else 3, cin, width,
                       stride=1 if bottleneck else stride, pad=0 if bottleneck else 1)
            y = b.bn(f"{t}_bn1", y, f"{t}_bn1", width)
            y = b.relu(f"{t}_relu", y, f"{t}_relu")
            if bottleneck:  # torchvision (v1.5): the stride sits on the 3x3 conv2
                y = b.conv(f"{t}_conv2", y, f"{t}_conv2", 3, width, width, stride=stride, pad=1)
                y = b.bn(f"{t}_bn2", y, f"{t}_bn2", width)
                y = b.relu(f"{t}_relu_1", y, f"{t}_relu_1")
                y = b.conv(f"{t}_conv3", y, f"{t}_conv3", 1, width, cout)
                y = b.bn(f"{t}_bn3", y, f"{t}_bn3", cout)
            else:
                y = b.conv(f"{t}_conv2", y, f"{t}_conv2", 3, width, width, pad=1)
                y = b.bn(f"{t}_bn2", y, f"{t}_bn2", width)
            shortcut = x
            if blk == 0 and (stride != 1 or cin != cout):
                shortcut = b.conv(f"{t}_downsample_0", x, f"{t}_downsample_0", 1, cin, cout,
                                  stride=stride)
                shortcut = b.bn(f"{t}_downsample_1", shortcut, f"{t}_downsample_1", cout)
            y = b.sum(f"{t}_merge", [y, shortcut], f"{t}_merge")
            x = b.relu(f"{t}_id_relu", y, f"{t}_id_relu")
            cin = cout
    x = b.pool("features_8", x, "features_8", "avg", 7, 1, (0, 0, 0, 0))
    x = b.other("classifier_permute", "dagnn.Permute", [x], "classifier_permute",
                {"order": np.array([2.0, 1.0, 3.0, 4.0])})
    x = b.other("classifier_flatten", "dagnn.Flatten", [x], "classifier_flatten",
                {"axis": 3.0})
    return x, cin


def _caffe_base(b: _NetBuilder) -> tuple[str, int]:
    """MatConvNet's import of the Caffe ResNet-50 (``conv1``, ``res2a`` ...)."""
    x = b.conv("conv1", "data", "conv1", 7, 3, 64, stride=2, pad=3, bias=True)
    x = b.bn("bn_conv1", x, "conv1x", 64)
    x = b.relu("conv1_relu", x, "conv1xxx")
    x = b.pool("pool1", x, "pool1", "max", 3, 2, (0, 1, 0, 1))
    counts, _ = _STAGES["resnet50"]
    cin = 64
    for s, (count, width) in enumerate(zip(counts, _WIDTHS, strict=True), start=2):
        for blk in range(count):
            t = f"{s}{CAFFE_BLOCK_LETTERS[blk]}"
            stride = 2 if (blk == 0 and s > 2) else 1
            cout = width * 4
            shortcut = x
            if blk == 0:  # Caffe ResNet v1: stride on the 1x1 branch1 and branch2a
                shortcut = b.conv(f"res{t}_branch1", x, f"res{t}_branch1", 1, cin, cout,
                                  stride=stride)
                shortcut = b.bn(f"bn{t}_branch1", shortcut, f"res{t}_branch1x", cout)
            y = b.conv(f"res{t}_branch2a", x, f"res{t}_branch2a", 1, cin, width, stride=stride)
            y = b.bn(f"bn{t}_branch2a", y, f"res{t}_branch2ax", width)
            y = b.relu(f"res{t}_branch2a_relu", y, f"res{t}_branch2axxx")
            y = b.conv(f"res{t}_branch2b", y, f"res{t}_branch2b", 3, width, width, pad=1)
            y = b.bn(f"bn{t}_branch2b", y, f"res{t}_branch2bx", width)
            y = b.relu(f"res{t}_branch2b_relu", y, f"res{t}_branch2bxxx")
            y = b.conv(f"res{t}_branch2c", y, f"res{t}_branch2c", 1, width, cout)
            y = b.bn(f"bn{t}_branch2c", y, f"res{t}_branch2cx", cout)
            y = b.sum(f"res{t}", [shortcut, y], f"res{t}")
            x = b.relu(f"res{t}_relu", y, f"res{t}x")
            cin = cout
    x = b.pool("pool5", x, "pool5", "avg", 7, 1, (0, 0, 0, 0))
    return x, cin


def fastap_opt(family: str, dim: int, *, num_epochs: int = 30) -> dict[str, Any]:
    """The loss block's ``opt``: the run's options as ``get_opts`` would have set them."""
    arch = "resnet18" if family == FAMILY_RESNET18_PT else "resnet50"
    return {"dataset": "products", "arch": arch, "dim": float(dim), "nbins": 10.0,
            "batchSize": 256.0, "lr": 1e-5, "lrmult": 10.0, "lrdecay": 0.1,
            "lrstep": 10.0, "solver": "adam", "epoch": float(num_epochs),
            "testInterval": 10.0, "weightDecay": 5e-4, "gpus": 1.0, "continue": True,
            "Ks": np.array([1.0, 10.0, 100.0, 1000.0]), "prefix": "",
            "expDir": f"cachedir/products-FastAP-{dim}-{arch}/"
                      "10bins-batch256-adam1e-05mult10-WD0.0005"}


#: The ``net.meta`` field that marks a checkpoint written here (conversion records it).
SYNTHETIC_META = "synthetic"


def _meta(family: str) -> dict[str, Any]:
    """``net.meta`` as the base model carried it."""
    if family == FAMILY_RESNET50_CAFFE:
        # a smooth per-pixel RGB mean on the 0-255 scale (the Caffe model's mean image)
        yy, xx = np.meshgrid(np.linspace(-1, 1, 224), np.linspace(-1, 1, 224), indexing="ij")
        base = np.array([122.7, 114.9, 101.6])
        image = base[None, None, :] + 6.0 * (yy[..., None] * 0.5 + xx[..., None] * 0.25)
        normalization = {"imageSize": np.array([224.0, 224.0, 3.0]),
                         "averageImage": image.astype(np.float32), "interpolation": "bilinear",
                         "border": np.array([32.0, 32.0])}
    else:
        normalization = {"imageSize": np.array([224.0, 224.0, 3.0]),
                         "averageImage": np.array(IMAGENET_MEAN, np.float32),
                         "imageStd": np.array(IMAGENET_STD, np.float32)}
    return {"normalization": normalization,
            "inputs": {"name": "data", "size": np.array([224.0, 224.0, 3.0, 10.0])},
            SYNTHETIC_META: "random weights written by fastap-repro, not a trained model"}


def _state(params: list[dict[str, Any]], rng: np.random.Generator, t: int) -> dict[str, Any]:
    """``state.solverState``: Adam's m, v, t per param, as a cell (tuple) of structs."""
    solver = []
    for p in params:
        shape = p["value"].shape
        m = (rng.standard_normal(shape, np.float32) * 1e-4).astype(np.float32)
        v = (rng.random(shape, np.float32) * 1e-8).astype(np.float32)
        solver.append({"m": m, "v": v, "t": float(t)})
    return {"solverState": tuple(solver)}


def _stats(epoch: int, rng: np.random.Generator) -> dict[str, Any]:
    """``stats.train``/``stats.val``: one struct (num, time, objective) per epoch."""
    def series(num: int) -> list[dict[str, Any]] | dict[str, Any]:
        rows = [{"num": float(num), "time": float(300 * (e + 1) + rng.random()),
                 "objective": float(0.7 - 0.4 * (1 - np.exp(-e / 5)) + 0.01 * rng.random())}
                for e in range(epoch)]
        return rows[0] if len(rows) == 1 else rows  # a 1x1 struct array is a struct
    return {"train": series(59551), "val": series(60502)}


def checkpoint_tree(family: str, *, dim: int = 512, epoch: int = 3, with_state: bool = True,
                    seed: int = 0) -> dict[str, Any]:
    """The plain tree of a full-size synthetic FastAP checkpoint ``net-epoch-<epoch>.mat``.

    Variables ``net`` (layers, params, vars, meta), ``stats`` and, with ``with_state``,
    ``state`` (Adam ``m``/``v``/``t`` per param, about twice the size of the weights).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown FastAP family {family!r}; known: {', '.join(FAMILIES)}")
    if epoch < 1 or dim < 1:
        raise ValueError(f"epoch and dim must be positive, got epoch={epoch}, dim={dim}")
    rng = np.random.default_rng(seed)
    b = _NetBuilder(rng)
    if family == FAMILY_RESNET50_CAFFE:
        x, channels = _caffe_base(b)
    else:
        x, channels = _pt_mcn_base(b, "resnet18" if family == FAMILY_RESNET18_PT else "resnet50")
    std = np.sqrt(1.0 / channels)
    fc_w = b._param("fc_w", rng.standard_normal((1, 1, channels, dim), np.float32) * std,
                    1.0, 1.0)
    fc_b = b._param("fc_b", rng.standard_normal((dim, 1), np.float32) * 0.01, 2.0, 0.0)
    block = {"size": np.array([1.0, 1.0, channels, dim]), "hasBias": True, "opts": ["cuDNN"],
             "pad": np.zeros(4), "stride": np.array([1.0, 1.0]), "dilate": np.array([1.0, 1.0])}
    b._layer("fc", "dagnn.Conv", [x], "logits", [fc_w, fc_b], block)
    b.other("L2norm", "dagnn.LRN", ["logits"], "feats_l2",
            {"param": np.array([2.0 * dim, 0.0, 1.0, 0.5])})
    b.other("loss", "FastAP", ["feats_l2", "labels"], "objective",
            {"opt": fastap_opt(family, dim)})
    net = {"vars": [{"name": v, "precious": False} for v in b.var_names],
           "params": b.params, "layers": b.layers, "meta": _meta(family)}
    tree: dict[str, Any] = {"net": net}
    if with_state:
        tree["state"] = _state(b.params, rng, t=epoch * 233)
    tree["stats"] = _stats(epoch, rng)
    return tree


def write_synthetic_checkpoint(path: str | os.PathLike[str], family: str, *, dim: int = 512,
                               epoch: int = 3, with_state: bool = True, version: str = "7",
                               seed: int = 0, compress: bool = True) -> Path:
    """Write a synthetic FastAP checkpoint (see :func:`checkpoint_tree`) as MAT v7 or v7.3.

    Like MATLAB's ``saveState``, ``net`` and ``state`` are saved, then ``stats`` (here in one
    write). ``compress=False`` skips zlib/gzip (MATLAB compresses; random weights do not
    shrink, so tests save the time). Returns the path.
    """
    tree = checkpoint_tree(family, dim=dim, epoch=epoch, with_state=with_state, seed=seed)
    return save_mat(path, tree, version=version, compress=compress)
