"""The converted model against the reference executor, var by var (``fastap verify``).

The network of a file (a FastAP checkpoint or any supported MatConvNet network) is converted
and run beside :func:`converters.mcn.reference.run_reference` on the same input (random, or a
``.npy`` holding MATLAB's input: H x W x C x N). For each var both sides compute: max abs
error, relative L2 error and cosine, judged by ``converters.mcn.compare.TOLERANCES``.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from converters.errors import MatConvNetError
from converters.fastap.convert import average_image, convert_network
from converters.fastap.families import INPUT_SIZE, FastAPEmbedding, is_fastap_network
from converters.matio.values import to_floats
from converters.mcn.array_order import matlab_to_torch
from converters.mcn.compare import (
    TOLERANCES,
    VarComparison,
    compare_outputs,
    var_within_tolerance,
    within_tolerance,
)
from converters.mcn.net import McnNet
from converters.mcn.reader import read_network
from converters.mcn.reference import network_inputs, run_reference

DEFAULT_SIZE = 64  # random-input height/width for networks that state no input size


def _input_shape(net: McnNet, var: str, batch: int) -> tuple[int, int, int, int]:
    """H x W x C x N for input ``var``: meta.inputs size, else the reading conv's channels."""
    meta_inputs = (net.meta or {}).get("inputs")
    entries = meta_inputs if isinstance(meta_inputs, list) else [meta_inputs]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == var and "size" in entry:
            size = [int(v) for v in to_floats(entry["size"])] + [1, 1, 1]
            return size[0], size[1], size[2], batch
    channels = None
    for layer in net.layers:
        if var in layer.inputs and layer.type in ("dagnn.Conv", "dagnn.ConvTranspose"):
            channels = int(to_floats(layer.block["size"])[2])
            break
    if channels is None:
        raise MatConvNetError(f"{net.source}: cannot tell the shape of input {var!r}; "
                         "pass one with --input")
    return DEFAULT_SIZE, DEFAULT_SIZE, channels, batch


def make_inputs(net: McnNet, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random MATLAB-order inputs: FastAP nets get 0-255 RGB pixels minus the mean image."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for var in network_inputs(net):
        if var == "data" and is_fastap_network(net):
            pixels = rng.uniform(0, 255, (*INPUT_SIZE, 3, batch))
            mean = average_image(net)
            if mean is not None:
                pixels -= (mean.reshape(1, 1, 3, 1) if mean.size == 3 else mean[..., None])
            inputs[var] = pixels.astype(np.float32)
        else:
            inputs[var] = rng.standard_normal(_input_shape(net, var, batch)).astype(np.float32)
    return inputs


def load_input(path: str | os.PathLike[str], names: list[str]) -> dict[str, np.ndarray]:
    """A ``.npy`` (one input, H x W x C [x N]) or ``.npz`` (arrays named by input var)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # numpy raises EOFError on an empty file
        raise MatConvNetError(f"{path}: not a .npy/.npz array file ({exc})") from exc
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise MatConvNetError(f"{path}: the network reads {names}; "
                                  "give a .npz with those names")
        return {names[0]: _numeric_input(path, names[0], loaded)}
    missing = [n for n in names if n not in loaded.files]
    if missing:
        raise MatConvNetError(f"{path}: no array for input(s) {missing} (holds {loaded.files})")
    return {n: _numeric_input(path, n, loaded[n]) for n in names}


def _numeric_input(path: str | os.PathLike[str], var: str, array: np.ndarray) -> np.ndarray:
    """``array`` as the float32 input ``var``: numbers, H x W x C [x N], all finite."""
    if array.dtype.kind not in "biuf":
        raise MatConvNetError(f"{path}: input {var!r} holds {array.dtype} values, not numbers")
    if array.ndim not in (3, 4):
        raise MatConvNetError(f"{path}: input {var!r} has shape {list(array.shape)}; expected "
                              "H x W x C or H x W x C x N (MATLAB order)")
    if not np.all(np.isfinite(array)):
        raise MatConvNetError(f"{path}: input {var!r} holds NaN or Inf values")
    return array.astype(np.float32)


def check_input_channels(net: McnNet, inputs: dict[str, np.ndarray],
                         source: str | os.PathLike[str]) -> None:
    """Each input's channel count (MATLAB's third dimension) against what the network reads."""
    for var, array in inputs.items():
        try:
            expected = _input_shape(net, var, 1)[2]
        except MatConvNetError:
            continue  # the network states no size for this input: nothing to check against
        if array.shape[2] != expected:
            raise MatConvNetError(
                f"{source}: input {var!r} has {array.shape[2]} channels (shape "
                f"{list(array.shape)}, MATLAB order H x W x C x N); the network reads "
                f"{expected}")


def verify(file: str | os.PathLike[str], input: str | os.PathLike[str] | None = None,
           batch: int = 2, dtype: str = "float32", seed: int = 0
           ) -> tuple[list[VarComparison], bool]:
    """Compare the converted model of ``file`` with the reference; return (per var, all ok).

    For a FastAP model the vars compared are those the torchvision model exposes (every
    conv and BatchNorm output, the base output, ``logits``, ``feats_l2``); for a generic
    network every var.
    """
    if dtype not in TOLERANCES:
        raise MatConvNetError(f"--dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")
    if batch < 1:
        raise MatConvNetError(f"--batch must be positive, got {batch}")
    net = read_network(file)
    model, _card = convert_network(net, dtype=getattr(torch, dtype))
    if input is None:
        inputs = make_inputs(net, batch, seed)
    else:
        inputs = load_input(input, network_inputs(net))
        check_input_channels(net, inputs, input)
    return verify_model(net, model, inputs, dtype)


def verify_model(net: McnNet, model: torch.nn.Module, inputs: dict[str, np.ndarray],
                 dtype: str = "float32") -> tuple[list[VarComparison], bool]:
    """Compare an already converted ``model`` of ``net`` (run in ``dtype``) with the float64
    reference on MATLAB-order ``inputs``; return (per var, all within tolerance)."""
    torch_dtype = getattr(torch, dtype)
    reference = run_reference(net, inputs, dtype=np.float64)
    torch_inputs = {name: matlab_to_torch(torch.from_numpy(np.asarray(value, np.float64)))
                    .contiguous().to(torch_dtype) for name, value in inputs.items()}
    with torch.no_grad():
        ours = model.mcn_outputs(torch_inputs)
    if isinstance(model, FastAPEmbedding):
        reference = {name: value for name, value in reference.items() if name in ours}
    else:
        reference = {name: value for name, value in reference.items() if name not in inputs}
    comparisons = compare_outputs(reference, ours)
    return comparisons, within_tolerance(comparisons, dtype)


def comparison_table(comparisons: list[VarComparison], dtype: str) -> pd.DataFrame:
    """One row per var: shape, the three error measures, and whether it is within tolerance."""
    rows = [{"var": c.name, "shape": "x".join(map(str, c.shape)),
             "max_abs_error": c.max_abs_error, "rel_l2": c.rel_l2, "cosine": c.cosine,
             "ok": var_within_tolerance(c, dtype), "problem": c.problem} for c in comparisons]
    return pd.DataFrame(rows, columns=["var", "shape", "max_abs_error", "rel_l2", "cosine",
                                       "ok", "problem"])
