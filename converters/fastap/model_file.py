"""Converted models on disk: one ``.pt`` file holding the weights and the model card.

``save_model(path, model, card)`` writes (atomically: temporary name, then rename) and
``load_model(path) -> (model, card)`` reads back. The file is a plain ``torch.save`` dict
that ``torch.load(..., weights_only=True)`` accepts (tensors, strings, numbers only):

- ``format_version``, ``kind`` (``"fastap"`` or ``"generic"``), ``card_json`` (the card);
- ``fastap``: ``state_dict`` of a :class:`converters.fastap.families.FastAPEmbedding` and
  ``module_vars`` (module path -> MatConvNet var name, for ``mcn_outputs``);
- ``generic``: ``network_json`` (layers, vars, meta of the ``McnNet``) and ``params``
  (name -> tensor in MATLAB order); the module is rebuilt with ``converters.mcn.to_torch``;
- ``average_image``: the mean image as a float32 tensor (3 values or 224x224x3, MATLAB
  H x W x C order), or absent.

For a FastAP model, ``model(x)`` takes float32 N x 3 x 224 x 224 (RGB, 0-255 scale, the mean
image already subtracted: MATLAB's ``data`` permuted to NCHW) and returns the L2-normalised
N x D embeddings; ``card["input"]["average_image"]`` is a numpy float32 array after loading
(the JSON card stores a list for a 3-vector, ``"stored"`` for a full image).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.atomic_file import atomic_path
from converters.errors import MatConvNetError
from converters.fastap.families import FastAPEmbedding, build_model
from converters.mcn.net import McnLayer, McnNet, McnParam, McnVar

FORMAT_VERSION = 1
KIND_FASTAP = "fastap"
KIND_GENERIC = "generic"


def save_model(path: str | os.PathLike[str], model: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``model`` and its ``card`` to ``path`` atomically; return the path.

    ``card["input"]["average_image"]`` may be a numpy array (3 values or H x W x 3); it is
    stored as a tensor beside the weights and the JSON card records it as a list (3 values)
    or ``"stored"``.
    """
    card = copy.deepcopy(card)
    card.setdefault("format_version", FORMAT_VERSION)
    payload: dict[str, Any] = {"format_version": FORMAT_VERSION}
    average = (card.get("input") or {}).get("average_image")
    if average is not None and not isinstance(average, str):
        array = np.asarray(average, dtype=np.float32)
        payload["average_image"] = torch.from_numpy(np.ascontiguousarray(array))
        card["input"]["average_image"] = array.ravel().tolist() if array.size == 3 else "stored"
        card["input"]["average_image_shape"] = list(array.shape)
    if isinstance(model, FastAPEmbedding):
        payload["kind"] = KIND_FASTAP
        payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        names = {module: name for name, module in model.named_modules()}
        payload["module_vars"] = {names[m]: var for m, var in
                                  getattr(model, "_module_vars", {}).items() if m in names}
    else:
        net = getattr(model, "mcn_net", None)
        if not isinstance(net, McnNet):
            raise TypeError(f"cannot save a {type(model).__name__}: expected a FastAPEmbedding "
                            "or a module from convert_network (with an `mcn_net` attribute)")
        payload["kind"] = KIND_GENERIC
        payload["network_json"] = json.dumps(_network_to_jsonable(net))
        payload["params"] = {name: torch.from_numpy(np.ascontiguousarray(p.value))
                             for name, p in net.params.items()}
    payload["card_json"] = json.dumps(card, default=_jsonable)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The model and card saved by :func:`save_model` (model in eval mode, on the CPU)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError on foreign files
        raise MatConvNetError(f"{path}: not a converted model file ({exc})") from exc
    if not isinstance(payload, dict) or "card_json" not in payload:
        raise MatConvNetError(f"{path}: not a converted model file (no model card)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise MatConvNetError(f"{path}: model file format {version}, this reader knows "
                              f"{FORMAT_VERSION}")
    card = json.loads(payload["card_json"])
    if "average_image" in payload:
        card.setdefault("input", {})["average_image"] = payload["average_image"].numpy()
    if payload.get("kind") == KIND_FASTAP:
        model = _load_fastap(path, payload, card)
    elif payload.get("kind") == KIND_GENERIC:
        model = _load_generic(payload)
    else:
        raise MatConvNetError(f"{path}: unknown model kind {payload.get('kind')!r}")
    model.eval()
    return model, card


def _load_fastap(path: str | os.PathLike[str], payload: dict[str, Any],
                 card: dict[str, Any]) -> FastAPEmbedding:
    """Rebuild the torchvision FastAP model of the card's family and load its weights."""
    state = payload["state_dict"]
    model = build_model(card["family"], int(card["embedding_dim"]), card.get("outputs"),
                        fc_bias="fc.bias" in state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MatConvNetError(f"{path}: weights do not fit a {card['family']} model ({exc})"
                              ) from exc
    modules = dict(model.named_modules())
    model.set_module_vars({modules[name]: var for name, var in
                           payload.get("module_vars", {}).items() if name in modules})
    return model


def _load_generic(payload: dict[str, Any]) -> nn.Module:
    """Rebuild a generic MatConvNet module from the stored network description."""
    from converters.mcn.to_torch import McnModule  # the generic converter (imported on demand)

    net = _network_from_jsonable(json.loads(payload["network_json"]), payload["params"])
    return McnModule(net)


def _network_to_jsonable(net: McnNet) -> dict[str, Any]:
    """An ``McnNet`` without its param values, as JSON-able data (arrays tagged)."""
    return {
        "layers": [{"name": la.name, "type": la.type, "inputs": la.inputs,
                    "outputs": la.outputs, "params": la.params, "block": _encode(la.block)}
                   for la in net.layers],
        "vars": [{"name": v.name, "precious": v.precious} for v in net.vars],
        "params": [{"name": p.name, "learningRate": p.learningRate,
                    "weightDecay": p.weightDecay} for p in net.params.values()],
        "meta": _encode(net.meta), "source": net.source, "format": net.format,
        "layout": net.layout,
    }


def _network_from_jsonable(data: dict[str, Any], values: dict[str, torch.Tensor]) -> McnNet:
    """The inverse of :func:`_network_to_jsonable`, with param values from ``values``."""
    params = {p["name"]: McnParam(p["name"], values[p["name"]].numpy(),
                                  p["learningRate"], p["weightDecay"]) for p in data["params"]}
    return McnNet(
        layers=[McnLayer(la["name"], la["type"], la["inputs"], la["outputs"], la["params"],
                         _decode(la["block"])) for la in data["layers"]],
        params=params,
        vars=[McnVar(v["name"], v["precious"]) for v in data["vars"]],
        meta=_decode(data["meta"]), source=data["source"], format=data["format"],
        layout=data["layout"])


def _encode(value: Any) -> Any:
    """A plain MAT tree as JSON-able data; arrays become ``{"__array__", shape, dtype}``."""
    if isinstance(value, np.ndarray):
        return {"__array__": value.ravel(order="F").tolist(), "shape": list(value.shape),
                "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=np.dtype(value["dtype"])).reshape(
                value["shape"], order="F")
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """numpy values inside a card as plain JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable in a model card: {type(value).__name__}")
