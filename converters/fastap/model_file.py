"""Converted models on disk: a ``.pt`` file or a ``.safetensors`` file, each with the card inside.

``save_model(path, model, card)`` writes either format (by the path's suffix) atomically
(temporary name, then rename), and ``load_model(path) -> (model, card)`` reads either back
into the same model. Both hold the same payload:

- ``format_version``, ``kind`` (``"fastap"`` or ``"generic"``), ``card_json`` (the
  :class:`~converters.fastap.card.ModelCard`);
- ``fastap``: ``state_dict`` of a :class:`converters.fastap.families.FastAPEmbedding` and
  ``module_vars`` (module path -> MatConvNet var name, for ``mcn_outputs``);
- ``generic``: ``network_json`` (layers, vars, meta of the ``McnNet``) and ``params``
  (name -> tensor in MATLAB order); the module is rebuilt with ``converters.mcn.to_torch``;
- ``average_image``: the mean image as a float32 tensor (3 values or 224x224x3, MATLAB
  H x W x C order), or absent.

The ``.pt`` file is a plain ``torch.save`` dict that ``torch.load(..., weights_only=True)``
accepts; the ``.safetensors`` file keeps the tensors under ``state_dict.``/``params.``
prefixes and the strings in its metadata, so any safetensors reader can open it.

For a FastAP model, ``model(x)`` takes float32 N x 3 x 224 x 224 (RGB, 0-255 scale, the mean
image already subtracted: MATLAB's ``data`` permuted to NCHW) and returns the L2-normalised
N x D embeddings; ``card.input.average_image`` is a numpy float32 array after loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.atomic_file import atomic_path
from converters.errors import MatConvNetError
from converters.fastap.card import ModelCard
from converters.fastap.families import FastAPEmbedding, build_model
from converters.mcn.net import McnLayer, McnNet, McnParam, McnVar

FORMAT_VERSION = 1
KIND_FASTAP = "fastap"
KIND_GENERIC = "generic"
SAFETENSORS_SUFFIX = ".safetensors"
#: Payload entries that are tensor dicts; in a safetensors file their keys get this prefix.
_TENSOR_DICTS = ("state_dict", "params")
#: Payload entries that are JSON-able values; a safetensors file keeps them as JSON strings.
_JSON_ENTRIES = ("format_version", "kind", "module_vars")


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a safetensors model file (by its suffix)."""
    return os.fspath(path).endswith(SAFETENSORS_SUFFIX)


def save_model(path: str | os.PathLike[str], model: nn.Module, card: ModelCard) -> Path:
    """Write ``model`` and its ``card`` to ``path`` atomically (``.safetensors`` or torch)."""
    payload = _payload(model, card)
    with atomic_path(path) as tmp:
        if is_safetensors(path):
            from safetensors.torch import save_file

            tensors, metadata = _flatten(payload)
            save_file(tensors, os.fspath(tmp), metadata=metadata)
        else:
            torch.save(payload, tmp)
    return Path(path)


def _payload(model: nn.Module, card: ModelCard) -> dict[str, Any]:
    """The model file's content (see the module docstring) for ``model`` and ``card``."""
    payload: dict[str, Any] = {"format_version": FORMAT_VERSION}
    average = card.input.average_image
    if average is not None:
        array = np.asarray(average, dtype=np.float32)
        payload["average_image"] = torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(model, FastAPEmbedding):
        payload["kind"] = KIND_FASTAP
        payload["state_dict"] = {k: v.detach().cpu().contiguous()
                                 for k, v in model.state_dict().items()}
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
    payload["card_json"] = json.dumps(card.to_dict())
    return payload


def _flatten(payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A payload as safetensors' flat tensors and string metadata."""
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for key, value in payload.items():
        if key in _TENSOR_DICTS:
            tensors.update({f"{key}.{name}": t for name, t in value.items()})
        elif isinstance(value, torch.Tensor):
            tensors[key] = value
        elif key in _JSON_ENTRIES:
            metadata[key] = json.dumps(value)
        else:
            metadata[key] = value
    return tensors, metadata


def _unflatten(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """The inverse of :func:`_flatten`."""
    payload: dict[str, Any] = {}
    for key, value in metadata.items():
        payload[key] = json.loads(value) if key in _JSON_ENTRIES else value
    for name, tensor in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in _TENSOR_DICTS and rest:
            payload.setdefault(prefix, {})[rest] = tensor
        else:
            payload[name] = tensor
    return payload


def _read_payload(path: str | os.PathLike[str], *, card_only: bool = False) -> dict[str, Any]:
    """The payload of a model file of either format; foreign files are named errors.

    ``card_only`` reads no tensor data: a safetensors file's header alone, a ``.pt``
    memory-mapped (its tensors are not read until used).
    """
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {} if card_only else {k: handle.get_tensor(k)
                                                for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise MatConvNetError(f"{path}: not a safetensors model file ({exc})") from exc
        payload: Any = _unflatten(tensors, metadata)
    elif _is_mat_file(path):
        raise MatConvNetError(f"{path}: this is a MatConvNet checkpoint, not a converted model; "
                              f"run `fastap convert {path} -o MODEL.pt` first")
    else:
        try:
            payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True,
                                 mmap=card_only)
        except Exception as exc:  # torch raises RuntimeError/UnpicklingError on foreign files
            raise MatConvNetError(f"{path}: not a converted model file ({_first_line(exc)})"
                                  ) from exc
    if not isinstance(payload, dict) or not payload.get("card_json"):
        raise MatConvNetError(f"{path}: not a converted model file (no model card)")
    return payload


def _is_mat_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts as a MAT file does (v5 to v7.3 all open with a ``MATLAB`` header)."""
    with open(path, "rb") as handle:
        return handle.read(6) == b"MATLAB"


def _first_line(exc: Exception) -> str:
    """An exception's message up to its first line break (torch's messages run to pages)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Only the card of a model file: a ``.pt`` is memory-mapped, a safetensors header read."""
    payload = _read_payload(path, card_only=True)
    return ModelCard.from_json(payload["card_json"], source=os.fspath(path))


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelCard]:
    """The model and card saved by :func:`save_model` (model in eval mode, on the CPU)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    payload = _read_payload(path)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise MatConvNetError(f"{path}: model file format {version}, this reader knows "
                              f"{FORMAT_VERSION}")
    card = ModelCard.from_json(payload["card_json"], source=os.fspath(path))
    if "average_image" in payload:
        card.input.average_image = payload["average_image"].numpy()
    if payload.get("kind") == KIND_FASTAP:
        model = _load_fastap(path, payload, card)
    elif payload.get("kind") == KIND_GENERIC:
        model = _load_generic(payload)
    else:
        raise MatConvNetError(f"{path}: unknown model kind {payload.get('kind')!r}")
    model.eval()
    return model, card


def _load_fastap(path: str | os.PathLike[str], payload: dict[str, Any],
                 card: ModelCard) -> FastAPEmbedding:
    """Rebuild the torchvision FastAP model of the card's family and load its weights."""
    state = payload["state_dict"]
    model = build_model(card.family, int(card.embedding_dim or 0), card.outputs or None,
                        fc_bias="fc.bias" in state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MatConvNetError(f"{path}: weights do not fit a {card.family} model ({exc})"
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
