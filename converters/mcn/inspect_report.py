"""What a MatConvNet ``.mat`` file holds, as a JSON-able report and as text (``fastap inspect``).

The report: file format, top-level variables (shape, class), network layout, a layer table
(name, type, inputs, outputs, params), parameter count and shapes, a summary of ``meta`` and
of the checkpoint's ``stats`` (epochs and fields per set). The optimizer ``state`` is listed
among the variables but never read.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from converters.fastap.run_options import KEY_OPTIONS, checkpoint_epoch, loss_options
from converters.matio.read import list_variables
from converters.mcn.net import McnNet
from converters.mcn.reader import read_network

_MATLAB_CLASS = {"float64": "double", "float32": "single", "bool": "logical"}


def describe(value: Any, max_text: int = 60) -> str:
    """A one-line description of a plain-tree value (class and size, or short content)."""
    if value is None:
        return "(skipped object)"
    if isinstance(value, str):
        return repr(value) if len(value) <= max_text else repr(value[:max_text]) + "..."
    if isinstance(value, dict):
        return f"struct with fields {', '.join(value)}" if value else "struct with no fields"
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value) and len(value) <= 8:
            return "{" + ", ".join(repr(v) for v in value) + "}"
        if value and all(isinstance(v, dict) for v in value):
            return f"1x{len(value)} struct array"
        return f"1x{len(value)} cell"
    if isinstance(value, np.ndarray):
        cls = _MATLAB_CLASS.get(value.dtype.name, value.dtype.name)
        size = "x".join(str(n) for n in value.shape)
        if value.size == 0:
            return f"[] ({size} {cls})"
        if value.size <= 6:
            numbers = " ".join(f"{v:g}" if value.dtype.kind == "f" else str(v)
                               for v in value.ravel(order="F").tolist())
            return f"[{numbers}] ({cls})"
        return f"{size} {cls}"
    return repr(value)


def _meta_summary(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Each meta field described; one level of nested structs expanded."""
    if meta is None:
        return None
    summary: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dict) and value:
            summary[key] = {k: describe(v) for k, v in value.items()}
        else:
            summary[key] = describe(value)
    return summary


def _scalar(value: Any) -> float | None:
    """A 1x1 numeric value as float (None otherwise)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return float(value.ravel()[0])
    return None


def _stats_summary(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per set (train, val...): number of epochs, field names, and the last epoch's scalars."""
    if stats is None:
        return None
    summary: dict[str, Any] = {}
    for name, value in stats.items():
        epochs = [value] if isinstance(value, dict) else value
        if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
            summary[name] = {"description": describe(value)}
            continue
        fields = list(epochs[0]) if epochs else []
        last = {k: _scalar(v) for k, v in epochs[-1].items()} if epochs else {}
        summary[name] = {"epochs": len(epochs), "fields": fields,
                         "last": {k: v for k, v in last.items() if v is not None}}
    return summary


def inspect_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Inspect a MatConvNet ``.mat`` file; MatConvNetError when it holds no network."""
    source = os.fspath(path)
    variables = list_variables(source)
    net = read_network(source)
    layers = [{"name": layer.name, "type": layer.type, "inputs": layer.inputs,
               "outputs": layer.outputs, "params": layer.params} for layer in net.layers]
    params = [{"name": p.name, "shape": list(p.value.shape), "count": int(p.value.size)}
              for p in net.params.values()]
    return {
        "file": source,
        "size_bytes": os.path.getsize(source),
        "format": net.format,
        "variables": [{"name": name, "shape": list(shape), "class": cls}
                      for name, (shape, cls) in variables.items()],
        "layout": net.layout,
        "layers": layers,
        "layer_types": dict(Counter(layer.type for layer in net.layers)),
        "vars": [v.name for v in net.vars],
        "param_count": net.param_count(),
        "params": params,
        "meta": _meta_summary(net.meta),
        "stats": _stats_summary(net.stats),
        "fastap": _fastap_summary(net),
    }


def _fastap_summary(net: McnNet) -> dict[str, Any] | None:
    """The FastAP run's options and the checkpoint's epoch, when the file is a FastAP one."""
    options = loss_options(net)
    if options is None:
        return None
    epoch, epoch_from = checkpoint_epoch(net)
    return {"checkpoint_epoch": epoch, "epoch_from": epoch_from,
            "key_options": {k: options[k] for k in KEY_OPTIONS if k in options},
            "options": options}


def _option(value: Any) -> str:
    """One option value as MATLAB's ``disp`` would show it, short: text bare, lists spaced."""
    if isinstance(value, list):
        return "[" + " ".join(_option(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Left-aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return lines


def format_inspection(report: dict[str, Any]) -> str:
    """The report of ``inspect_file`` as readable text."""
    out = [f"file:    {report['file']} ({report['size_bytes']:,} bytes)",
           f"format:  MAT {report['format']}",
           f"layout:  {report['layout']}"]
    fastap = report.get("fastap")
    if fastap:
        keys = ", ".join(f"{k} {_option(v)}" for k, v in fastap["key_options"].items())
        out.append(f"FastAP:  checkpoint epoch {fastap['checkpoint_epoch']} "
                   f"(from {fastap['epoch_from']}); run options: {keys}")
        others = {k: v for k, v in fastap["options"].items() if k not in fastap["key_options"]}
        if others:
            out.append("         other options: "
                       + ", ".join(f"{k} {_option(v)}" for k, v in others.items()))
    out += ["", "variables:"]
    out += ["  " + line for line in _table(
        [[v["name"], "x".join(map(str, v["shape"])), v["class"]] for v in report["variables"]],
        ["name", "size", "class"])]
    types = ", ".join(f"{t} x{n}" for t, n in report["layer_types"].items())
    out += ["", f"layers ({len(report['layers'])}): {types}"]
    out += ["  " + line for line in _table(
        [[layer["name"], layer["type"], ",".join(layer["inputs"]), ",".join(layer["outputs"]),
          ",".join(layer["params"])] for layer in report["layers"]],
        ["name", "type", "inputs", "outputs", "params"])]
    out += ["", f"params ({len(report['params'])}, {report['param_count']:,} values):"]
    out += ["  " + line for line in _table(
        [[p["name"], "x".join(map(str, p["shape"])), f"{p['count']:,}"]
         for p in report["params"]], ["name", "size", "count"])]
    out += ["", "meta:" + (" none" if report["meta"] is None else "")]
    for key, value in (report["meta"] or {}).items():
        if isinstance(value, dict):
            out.append(f"  {key}:")
            out += [f"    {k}: {v}" for k, v in value.items()]
        else:
            out.append(f"  {key}: {value}")
    out += ["", "stats:" + (" none" if report["stats"] is None else "")]
    for name, info in (report["stats"] or {}).items():
        if "epochs" in info:
            last = ", ".join(f"{k}={v:g}" for k, v in info["last"].items())
            out.append(f"  {name}: {info['epochs']} epochs; fields {', '.join(info['fields'])}")
            if last:
                out.append(f"    last epoch: {last}")
        else:
            out.append(f"  {name}: {info['description']}")
    return "\n".join(out) + "\n"
