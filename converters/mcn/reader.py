"""Build an ``McnNet`` (layers, params, vars, meta by MatConvNet's names) from a ``.mat`` file.

Three layouts are recognised from the variables a file holds:

- ``dagnn``: a checkpoint or ``save(file, 'net')``: a top-level ``net`` struct from
  ``DagNN.saveobj`` (``vars``, ``params``, ``layers``, ``meta``), possibly with ``stats`` and
  the optimizer ``state`` beside it;
- ``dagnn-struct``: a ``save(file, '-struct', 'net')`` save: ``layers``/``params``/``vars``/
  ``meta`` are top-level variables;
- ``simplenn``: ``layers`` (under ``net`` or top level) is a cell array of structs with a
  ``type`` (conv, relu, pool, lrn, bnorm, softmax, softmaxloss, loss, dropout, convt). Each
  layer is normalised to its DagNN class (``dagnn.Conv``...) with the block fields DagNN
  uses, params named ``<layer>_filter``/``<layer>_bias`` (bnorm: ``_mult``, ``_bias``,
  ``_moments``) and generated variable names: the network input is ``x0`` and layer ``i``
  (1-based) maps ``x{i-1}`` to ``x{i}``; loss layers also read ``label``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from converters.errors import MatConvNetError
from converters.matio.read import list_variables, load_mat, mat_format
from converters.matio.values import to_bool, to_float, to_floats, to_str, to_strs
from converters.mcn.net import McnLayer, McnNet, McnParam, McnVar

log = logging.getLogger(__name__)

LAYOUT_DAGNN = "dagnn"
LAYOUT_DAGNN_STRUCT = "dagnn-struct"
LAYOUT_SIMPLENN = "simplenn"

# SimpleNN layer type -> DagNN class name.
SIMPLENN_TYPES = {
    "conv": "dagnn.Conv",
    "convt": "dagnn.ConvTranspose",
    "relu": "dagnn.ReLU",
    "pool": "dagnn.Pooling",
    "lrn": "dagnn.LRN",
    "normalize": "dagnn.LRN",  # the pre-beta name of lrn
    "bnorm": "dagnn.BatchNorm",
    "softmax": "dagnn.SoftMax",
    "softmaxloss": "dagnn.Loss",
    "loss": "dagnn.Loss",
    "dropout": "dagnn.DropOut",
}
_LOSS_TYPES = ("softmaxloss", "loss")


def read_network(path: str | os.PathLike[str], *, with_state: bool = False) -> McnNet:
    """Read the network a MatConvNet ``.mat`` file holds (checkpoint, -struct save, SimpleNN).

    Only the variables needed are read: a checkpoint's ``state`` (the optimizer state,
    about twice the weights) is read only when ``with_state`` is true.
    """
    source = os.fspath(path)
    fmt = mat_format(source)
    names = list_variables(source)
    if "net" in names:
        wanted = ["net", "stats"] + (["state"] if with_state else [])
    elif "layers" in names:
        wanted = [n for n in names if with_state or n != "state"]
    else:
        listing = ", ".join(f"{n} ({'x'.join(map(str, s))} {c})" for n, (s, c) in names.items())
        raise MatConvNetError(f"{source}: holds no MatConvNet network (no 'net' or 'layers' "
                              f"variable); its variables: {listing or 'none'}")
    tree = load_mat(source, [n for n in wanted if n in names])
    return network_from_tree(tree, source=source, format=fmt)


def network_from_tree(tree: dict[str, Any], source: str = "", format: str = "") -> McnNet:
    """Build an ``McnNet`` from a loaded plain tree (``load_mat``'s result).

    ``source`` (the file name) prefixes every error message; ``format`` is recorded as is.
    ``stats`` and ``state`` are attached when the tree holds them.
    """
    where = source or "network"
    if "net" in tree:
        net = tree["net"]
        if not isinstance(net, dict):
            raise MatConvNetError(
                f"{where}: variable 'net' is not a struct (a DagNN object saved without "
                "saveobj? re-save it with net = net.saveobj())")
        struct_save = False
    elif "layers" in tree:
        net = tree
        struct_save = True
    else:
        raise MatConvNetError(f"{where}: holds no MatConvNet network (no 'net' or 'layers' "
                              f"variable); its variables: {', '.join(tree) or 'none'}")
    if "layers" not in net:
        raise MatConvNetError(f"{where}: 'net' has no 'layers' field (fields: "
                              f"{', '.join(net) or 'none'})")
    layers = _as_list(net["layers"], f"{where}: layers")
    if _is_simplenn(layers):
        model = _simplenn(layers, where)
        layout = LAYOUT_SIMPLENN
    else:
        model = _dagnn(net, layers, where)
        layout = LAYOUT_DAGNN_STRUCT if struct_save else LAYOUT_DAGNN
    _check_references(model, where)
    model.meta = _meta(net.get("meta"))
    model.stats = _optional_dict(tree.get("stats"), "stats", where)
    model.state = _optional_dict(tree.get("state"), "state", where)
    model.source = source
    model.format = format
    model.layout = layout
    return model


# ---------------------------------------------------------------- helpers

def _as_list(value: Any, where: str) -> list[Any]:
    """A struct array or cell as a list (a 1x1 struct loads as a dict; ``[]`` as empty)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    raise MatConvNetError(f"{where}: expected a struct array or cell, "
                          f"got {type(value).__name__}")


def _structs(value: Any, where: str) -> list[dict[str, Any]]:
    """A struct array (``net.params``, ``net.vars``, DagNN ``net.layers``) as a list of dicts."""
    items = _as_list(value, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MatConvNetError(f"{where}({i + 1}) is not a struct "
                                  f"({type(item).__name__})")
    return items


def _is_empty(value: Any) -> bool:
    """MATLAB ``[]`` (or an absent value)."""
    if value is None:
        return True
    if isinstance(value, np.ndarray):
        return value.size == 0
    return isinstance(value, list | str) and len(value) == 0


def _meta(value: Any) -> dict[str, Any] | None:
    """``net.meta`` as a dict, or None when missing or ``[]``."""
    if _is_empty(value):
        return None
    if isinstance(value, dict):
        return value
    return {"value": value}


def _optional_dict(value: Any, name: str, where: str) -> dict[str, Any] | None:
    """``stats``/``state`` as a dict (None when absent; a warning if it is not a struct)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    log.warning("%s: '%s' is not a 1x1 struct (%s); ignored", where, name, type(value).__name__)
    return None


def _is_simplenn(layers: list[Any]) -> bool:
    """SimpleNN layers carry their weights; DagNN layers name inputs/outputs and a block."""
    if not layers:
        return False
    return not all(isinstance(layer, dict) and {"inputs", "outputs"} <= set(layer)
                   for layer in layers)


def _param_value(value: Any, where: str) -> np.ndarray:
    """A parameter array as float32, MATLAB shape kept (``[]`` -> shape (0, 0))."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return np.asarray(value, dtype=np.float32)
    if _is_empty(value):
        return np.zeros((0, 0), dtype=np.float32)
    raise MatConvNetError(f"{where}: value is not a numeric array ({type(value).__name__})")


def _number(value: Any, default: float, where: str) -> float:
    """A scalar property (``learningRate``...) or its default when absent/empty."""
    if _is_empty(value):
        return default
    try:
        return to_float(value)
    except ValueError as exc:
        raise MatConvNetError(f"{where}: {exc}") from exc


def _text(value: Any, where: str) -> str:
    try:
        return to_str(value)
    except ValueError as exc:
        raise MatConvNetError(f"{where}: {exc}") from exc


def _texts(value: Any, where: str) -> list[str]:
    try:
        return to_strs(value)
    except ValueError as exc:
        raise MatConvNetError(f"{where}: {exc}") from exc


def _check_references(model: McnNet, where: str) -> None:
    """Every param a layer names exists; names are unique."""
    names = model.layer_names()
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise MatConvNetError(f"{where}: duplicate layer names {dupes}")
    for layer in model.layers:
        for param in layer.params:
            if param not in model.params:
                raise MatConvNetError(f"{where}: layer {layer.name!r} uses param {param!r}, "
                                      "which the file does not hold")


# ---------------------------------------------------------------- DagNN

def _dagnn(net: dict[str, Any], layers: list[Any], where: str) -> McnNet:
    """``DagNN.saveobj``'s struct (or a -struct save) as an ``McnNet``."""
    params: dict[str, McnParam] = {}
    for i, entry in enumerate(_structs(net.get("params", []), f"{where}: params")):
        pwhere = f"{where}: params({i + 1})"
        name = _text(entry.get("name"), pwhere)
        pwhere = f"{where}: param {name!r}"
        if name in params:
            raise MatConvNetError(f"{pwhere} appears twice")
        params[name] = McnParam(
            name=name,
            value=_param_value(entry.get("value"), pwhere),
            learningRate=_number(entry.get("learningRate"), 1.0, pwhere),
            weightDecay=_number(entry.get("weightDecay"), 1.0, pwhere),
        )
    out_layers: list[McnLayer] = []
    for i, entry in enumerate(_structs(layers, f"{where}: layers")):
        lwhere = f"{where}: layers({i + 1})"
        name = _text(entry.get("name"), lwhere)
        lwhere = f"{where}: layer {name!r}"
        block = entry.get("block", {})
        if _is_empty(block) or not isinstance(block, dict):
            block = {} if _is_empty(block) else {"value": block}
        out_layers.append(McnLayer(
            name=name,
            type=_text(entry.get("type"), f"{lwhere} type"),
            inputs=_texts(entry.get("inputs", []), f"{lwhere} inputs"),
            outputs=_texts(entry.get("outputs", []), f"{lwhere} outputs"),
            params=_texts(entry.get("params", []), f"{lwhere} params"),
            block=block,
        ))
    if "vars" in net and not _is_empty(net["vars"]):
        variables = [
            McnVar(name=_text(v.get("name"), f"{where}: vars({i + 1})"),
                   precious=bool(to_bool(v["precious"])) if not _is_empty(v.get("precious"))
                   else False)
            for i, v in enumerate(_structs(net["vars"], f"{where}: vars"))
        ]
    else:  # a -struct save without vars: the order in which layers mention them
        seen: dict[str, None] = {}
        for layer in out_layers:
            for var in layer.inputs + layer.outputs:
                seen.setdefault(var, None)
        variables = [McnVar(name=n) for n in seen]
    return McnNet(layers=out_layers, params=params, vars=variables)


# ---------------------------------------------------------------- SimpleNN

def _pad4(value: Any, default: float = 0.0) -> list[float]:
    """SimpleNN pad (scalar, [pv ph] is not MatConvNet's, or [t b l r]) as [t b l r]."""
    numbers = to_floats(value) if not _is_empty(value) else [default]
    if len(numbers) == 1:
        return numbers * 4
    if len(numbers) == 4:
        return numbers
    raise ValueError(f"pad must have 1 or 4 elements, got {numbers}")


def _pair(value: Any, default: float) -> list[float]:
    """A scalar or [y x] property as [y x]."""
    numbers = to_floats(value) if not _is_empty(value) else [default]
    if len(numbers) == 1:
        return numbers * 2
    if len(numbers) == 2:
        return numbers
    raise ValueError(f"expected 1 or 2 elements, got {numbers}")


def _row(values: list[float]) -> np.ndarray:
    """A list of numbers as a MATLAB row vector (1xN double), as DagNN blocks hold them."""
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


def _weights(layer: dict[str, Any]) -> list[Any]:
    """A SimpleNN layer's weights: ``weights`` cell, or the old ``filters``/``biases`` fields."""
    if "weights" in layer:
        weights = layer["weights"]
        if isinstance(weights, np.ndarray):
            return [] if weights.size == 0 else [weights]
        return _as_list(weights, "weights")
    return [layer[k] for k in ("filters", "biases") if k in layer]


def _simplenn(layers: list[Any], where: str) -> McnNet:
    """A SimpleNN ``layers`` cell as an ``McnNet`` with DagNN names (see module docstring)."""
    out_layers: list[McnLayer] = []
    params: dict[str, McnParam] = {}
    variables = [McnVar(name="x0")]
    needs_label = False
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise MatConvNetError(f"{where}: layers{{{i + 1}}} is not a struct")
        name = _text(layer["name"], f"{where}: layers{{{i + 1}}} name") \
            if not _is_empty(layer.get("name")) else f"layer{i + 1}"
        lwhere = f"{where}: layer {name!r}"
        raw_type = _text(layer.get("type", ""), f"{lwhere} type")
        kind = SIMPLENN_TYPES.get(raw_type, raw_type)
        if raw_type not in SIMPLENN_TYPES:
            log.warning("%s: SimpleNN layer type %r has no DagNN equivalent; kept as is",
                        lwhere, raw_type)
        inputs = [f"x{i}"] + (["label"] if raw_type in _LOSS_TYPES else [])
        needs_label = needs_label or raw_type in _LOSS_TYPES
        outputs = [f"x{i + 1}"]
        try:
            block, named = _simplenn_block(raw_type, name, layer)
        except ValueError as exc:
            raise MatConvNetError(f"{lwhere}: {exc}") from exc
        rates = to_floats(layer["learningRate"]) if not _is_empty(layer.get("learningRate")) \
            else []
        decays = to_floats(layer["weightDecay"]) if not _is_empty(layer.get("weightDecay")) \
            else []
        for j, (pname, value) in enumerate(named):
            params[pname] = McnParam(
                name=pname,
                value=_param_value(value, f"{where}: param {pname!r}"),
                learningRate=rates[j] if j < len(rates) else 1.0,
                weightDecay=decays[j] if j < len(decays) else 1.0,
            )
        out_layers.append(McnLayer(name=name, type=kind, inputs=inputs, outputs=outputs,
                                   params=[p for p, _ in named], block=block))
        variables.append(McnVar(name=f"x{i + 1}", precious=bool(
            to_bool(layer["precious"])) if not _is_empty(layer.get("precious")) else False))
    if needs_label:
        variables.insert(1, McnVar(name="label"))
    return McnNet(layers=out_layers, params=params, vars=variables)


def _simplenn_block(raw_type: str, name: str,
                    layer: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The DagNN block fields and the (param name, value) pairs of one SimpleNN layer."""
    weights = _weights(layer)
    if raw_type in ("conv", "convt"):
        if not weights:
            raise ValueError("conv layer without weights")
        filters = np.asarray(weights[0])
        bias = weights[1] if len(weights) > 1 else np.zeros((0, 0))
        has_bias = not _is_empty(bias)
        size = list(filters.shape) + [1] * (4 - filters.ndim)
        named = [(f"{name}_filter", filters)] + ([(f"{name}_bias", bias)] if has_bias else [])
        block: dict[str, Any] = {"size": _row(size), "hasBias": np.array([[has_bias]])}
        if raw_type == "conv":
            block.update(pad=_row(_pad4(layer.get("pad"))),
                         stride=_row(_pair(layer.get("stride"), 1.0)),
                         dilate=_row(_pair(layer.get("dilate"), 1.0)))
        else:
            block.update(upsample=_row(_pair(layer.get("upsample"), 1.0)),
                         crop=_row(_pad4(layer.get("crop"))),
                         numGroups=np.array([[_number(layer.get("numGroups"), 1.0, name)]]))
        return block, named
    if raw_type == "pool":
        method = to_str(layer["method"]) if not _is_empty(layer.get("method")) else "max"
        return {"method": method,
                "poolSize": _row(_pair(layer.get("pool"), 1.0)),
                "pad": _row(_pad4(layer.get("pad"))),
                "stride": _row(_pair(layer.get("stride"), 1.0))}, []
    if raw_type in ("lrn", "normalize"):
        param = to_floats(layer["param"]) if not _is_empty(layer.get("param")) \
            else [5.0, 1.0, 0.0001, 0.75]
        return {"param": _row(param)}, []
    if raw_type == "relu":
        return {"leak": np.array([[_number(layer.get("leak"), 0.0, name)]])}, []
    if raw_type == "bnorm":
        if len(weights) < 2:
            raise ValueError("bnorm layer without mult/bias weights")
        named = [(f"{name}_mult", weights[0]), (f"{name}_bias", weights[1])]
        if len(weights) > 2:
            named.append((f"{name}_moments", weights[2]))
        return {"epsilon": np.array([[_number(layer.get("epsilon"), 1e-5, name)]])}, named
    if raw_type == "dropout":
        return {"rate": np.array([[_number(layer.get("rate"), 0.5, name)]])}, []
    if raw_type == "softmaxloss":
        return {"loss": "softmaxlog"}, []
    if raw_type == "loss":
        loss = to_str(layer["loss"]) if not _is_empty(layer.get("loss")) else "softmaxlog"
        return {"loss": loss}, []
    if raw_type == "softmax":
        return {}, []
    # unknown type: keep its fields (minus the weights) so the executor can name it
    block = {k: v for k, v in layer.items() if k not in ("type", "name", "weights")}
    named = [(f"{name}_param{j + 1}", w) for j, w in enumerate(weights)]
    return block, named
