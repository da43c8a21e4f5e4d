"""A trained model as a MatConvNet ``net-epoch-N.mat``, in the layout ``fastap convert`` reads.

The layers, params and vars are those of the released checkpoints (the synthetic writer
:func:`converters.fastap.synthetic.checkpoint_tree` builds exactly that layout); every param
value is then replaced by the trained one: conv filters ``kh x kw x Cin x Cout``, BatchNorm
``mult``, ``bias`` and ``moments`` ``[mu sigma]`` as MatConvNet keeps them (not folded),
``fc_w`` ``1 x 1 x in x D``, ``fc_b`` ``D x 1``. ``net.meta`` holds our ``averageImage`` and
says the file is a fastap-repro training run; the ``FastAP`` loss block's ``opt`` holds the
run's options; ``stats.train`` one struct per epoch (``num`` 0, ``time``, ``objective``), as
``train_hard`` saves them. The optimizer ``state`` is not written (our checkpoint has it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.fastap.families import FastAPEmbedding, family_layout
from converters.fastap.synthetic import SYNTHETIC_META, checkpoint_tree
from converters.matio.write import save_mat
from reproduce.training.batchnorm import McnBatchNorm2d

#: ``net.meta`` field naming where the file came from.
TRAINED_META = "trained_by"


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _mcn_values(model: FastAPEmbedding) -> dict[str, list[np.ndarray]]:
    """The param values of every conv, BatchNorm and ``fc`` layer, by MatConvNet layer name."""
    layout = family_layout(model.family, model.base)
    values: dict[str, list[np.ndarray]] = {}
    for name, conv in layout.convs.items():
        filt = [_f32(conv.weight).transpose(2, 3, 1, 0)]
        if conv.bias is not None:
            filt.append(_f32(conv.bias).reshape(-1, 1))
        values[name] = filt
    for name, bn in layout.bns.items():
        if not isinstance(bn, McnBatchNorm2d):
            raise TypeError(f"export: BatchNorm {name!r} is not a McnBatchNorm2d")
        values[name] = [_f32(bn.mult).reshape(-1, 1), _f32(bn.bias).reshape(-1, 1),
                        _f32(bn.moments).reshape(-1, 2)]
    values["fc"] = [_f32(model.fc.weight).T[None, None], _f32(model.fc.bias).reshape(-1, 1)]
    return values


def export_tree(model: FastAPEmbedding, *, epoch: int, opt: dict[str, Any],
                average_image: np.ndarray, objectives: list[tuple[float, float]]
                ) -> dict[str, Any]:
    """The ``{"net", "stats"}`` tree of ``net-epoch-<epoch>.mat`` for ``model``.

    ``objectives``: ``(time, objective)`` per epoch 1..epoch.
    """
    tree = checkpoint_tree(model.family, dim=model.embedding_dim, epoch=1, with_state=False)
    net = tree["net"]
    params = {p["name"]: p for p in net["params"]}
    values = _mcn_values(model)
    for layer in net["layers"]:
        if layer["name"] in values:
            for pname, value in zip(layer["params"], values[layer["name"]], strict=True):
                if params[pname]["value"].shape != value.shape:
                    raise ValueError(f"export: {pname} shape {value.shape}, layout "
                                     f"{params[pname]['value'].shape}")
                params[pname]["value"] = np.ascontiguousarray(value, np.float32)
        if layer["type"] == "FastAP":
            layer["block"] = {"opt": opt}
    meta = net["meta"]
    meta.pop(SYNTHETIC_META, None)
    meta[TRAINED_META] = "fastap train (fastap-repro)"
    meta["normalization"] = {"imageSize": np.array([224.0, 224.0, 3.0]),
                             "averageImage": np.asarray(average_image, np.float32)}
    rows = [{"num": 0.0, "time": float(t), "objective": float(o)} for t, o in objectives]
    series: Any = rows[0] if len(rows) == 1 else rows
    tree["stats"] = {"train": series,
                     "val": [{"num": 0.0, "time": 0.0}] * len(rows) if len(rows) > 1
                     else {"num": 0.0, "time": 0.0}}
    return tree


def export_checkpoint(path: str | os.PathLike[str], model: FastAPEmbedding, *, epoch: int,
                      opt: dict[str, Any], average_image: np.ndarray,
                      objectives: list[tuple[float, float]], compress: bool = True) -> Path:
    """Write ``net-epoch-<epoch>.mat`` atomically (MAT v7); returns the path."""
    tree = export_tree(model, epoch=epoch, opt=opt, average_image=average_image,
                       objectives=objectives)
    return save_mat(path, tree, version="7", compress=compress)  # atomic itself
