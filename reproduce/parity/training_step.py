"""Parity of the training step (:mod:`reproduce.training.step`) with saved MATLAB batches.

A step fixture (``layers``, ``params_init``, ``images``, ``labels``, ``step1``, ``step2``,
``opts``; README of ``fixtures/training_matlab``) holds a tiny DagNN, its initial parameters
and two consecutive batches trained by ``train_hard``'s per-batch block. We build the network
as a torch module from ``layers`` (``converters.mcn.to_torch`` with our
:class:`~reproduce.training.batchnorm.McnBatchNorm2d` swapped in), run
:class:`~reproduce.training.step.TrainStep` on both batches (plain or staged, as each batch's
``mode`` says) with :class:`~reproduce.training.optimizer.McnAdam`, and compare every saved
quantity when our run reaches it: the stage-1 embeddings, ``embeddingMat``, ``gradientMat``,
``obj_staged``, then per chunk ``pool``, ``logits``, ``feats_l2``, ``dzdfeats``, every
parameter derivative and every parameter after the chunk's update, then per batch the
parameters (moments included), Adam's ``m``, ``v``, ``t`` and the batch objective.

The run is *end to end*: our parameters are never reset to MATLAB's, so each row carries
every earlier difference. Tolerances (:data:`TOLERANCES`) are relative to the largest MATLAB
magnitude of the quantity, one per kind and LRN kernel; see ``docs/training.md`` for how
they were measured and why they are what they are. In short, ``exact`` files are held to a
few float32 roundings amplified by the network (BatchNorm divides by small batch standard
deviations), ``fastpow`` files to the error of MatConvNet's approximate CPU power in
``vl_nnnormalize`` (up to 0.2 % on ``feats_l2`` and 1-2.5 % on its backward), which no
exact implementation can reproduce. Conv biases before a BatchNorm have a derivative that
is zero up to rounding; their ders are compared with an absolute tolerance of the other
ders' rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from converters.mcn.net import McnLayer, McnNet, McnParam
from converters.mcn.to_torch import McnBatchNorm, McnModule
from reproduce.errors import InputError
from reproduce.parity.fixture_file import fixture_text
from reproduce.parity.row import ParityRow
from reproduce.parity.training import (
    case_label,
    cell_list,
    compare_row,
    field,
    loaded_fixture,
    number,
)
from reproduce.training.batchnorm import McnBatchNorm2d
from reproduce.training.optimizer import McnAdam
from reproduce.training.step import TrainStep, chunk_slices

log = logging.getLogger(__name__)

__all__ = ["STEP_REQUIRED", "TOLERANCES", "check_step_fixture", "is_step_fixture"]

STEP_REQUIRED = ("layers", "params_init", "images", "labels", "step1", "opts", "param_names")

#: relative tolerance per (LRN kernel, kind of quantity); see the module docstring
TOLERANCES: dict[str, dict[str, float]] = {
    "exact": {"activation": 2e-6, "gradient": 1e-5, "der": 2e-5, "param": 2e-6,
              "moments": 2e-6, "adam": 2e-5, "objective": 1e-6},
    "fastpow": {"activation": 5e-3, "gradient": 2.5e-2, "der": 3e-2, "param": 2e-4,
                "moments": 5e-4, "adam": 3e-2, "objective": 5e-3},
}


def is_step_fixture(mat: dict[str, Any]) -> bool:
    """Whether a loaded MAT dict is a saved run of ``train_hard``'s per-batch block."""
    return all(name in mat for name in STEP_REQUIRED)


# --- the network -------------------------------------------------------------------------------

def _block(value: Any) -> dict[str, Any]:
    """A layer's ``block`` struct as the dict ``McnLayer`` holds."""
    arr = np.asarray(value)
    if arr.dtype.names is None:
        return {}
    item = arr.ravel()[0]
    return {name: fixture_text(item[name]) if np.asarray(item[name]).dtype.kind == "U"
            else item[name] for name in arr.dtype.names}


def _names(value: Any) -> list[str]:
    """A cell of strings (possibly empty) as a list."""
    arr = np.asarray(value)
    if arr.size == 0:
        return []
    return [fixture_text(v) for v in cell_list(arr)]


def fixture_net(mat: dict[str, Any]) -> McnNet:
    """The saved DagNN as an ``McnNet`` with ``params_init`` and the saved multipliers."""
    layers = [McnLayer(name=fixture_text(entry["name"]), type=fixture_text(entry["type"]),
                       inputs=_names(entry["inputs"]), outputs=_names(entry["outputs"]),
                       params=_names(entry["params"]), block=_block(entry["block"]))
              for entry in np.asarray(mat["layers"]).ravel()]
    names = _names(mat["param_names"])
    lr = np.asarray(mat["param_learningRate"], dtype=np.float64).ravel()
    wd = np.asarray(mat["param_weightDecay"], dtype=np.float64).ravel()
    params = {n: McnParam(n, np.asarray(field(mat["params_init"], n)), float(lr[i]),
                          float(wd[i])) for i, n in enumerate(names)}
    return McnNet(layers=layers, params=params, vars=[], source="step fixture")


class _Tap:
    """Keeps the latest output of a module (forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.value: Tensor | None = None
        module.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, output: Tensor) -> None:
        self.value = output.detach().clone()


class StepNet(nn.Module):
    """The fixture's network: ``images -> feats_l2`` with MatConvNet BatchNorm for training.

    ``params`` maps each MatConvNet parameter name to ``(tensor, to_mcn)``: ``to_mcn`` turns
    the torch tensor (or its grad) into MatConvNet's layout.
    """

    def __init__(self, net: McnNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.body = McnModule(net, dtype=dtype)
        self.params: dict[str, tuple[Tensor, Callable[[Tensor], Tensor]]] = {}
        self.moments: dict[str, McnBatchNorm2d] = {}
        self.rates: dict[str, float] = {}
        self.taps: dict[str, _Tap] = {}
        by_name = {layer.name: layer for layer in net.layers}
        for key, name, _, out_var in self.body.graph:
            layer, module = by_name[name], self.body.layers[key]
            if isinstance(module, McnBatchNorm):
                eps = float(np.asarray(layer.block.get("epsilon", 1e-5)).ravel()[0])
                moments_name = layer.params[2]
                bn = McnBatchNorm2d(module.mult.numel(), epsilon=eps,
                                    rate=net.params[moments_name].learningRate, dtype=dtype)
                with torch.no_grad():
                    bn.mult.copy_(module.mult.reshape(-1))
                    bn.bias.copy_(module.bias.reshape(-1))
                    bn.moments.copy_(torch.from_numpy(np.asarray(
                        net.params[moments_name].value, dtype=np.float64)).to(dtype))
                self.body.layers[key] = bn
                self.params[layer.params[0]] = (bn.mult, _column)
                self.params[layer.params[1]] = (bn.bias, _column)
                self.moments[moments_name] = bn
            elif layer.type == "dagnn.Conv":
                self.params[layer.params[0]] = (module.weight, _filter_to_mcn)
                if len(layer.params) > 1:
                    self.params[layer.params[1]] = (module.bias, _column)
            self.taps[out_var] = _Tap(self.body.layers[key])

    def forward(self, x: Tensor) -> Tensor:
        """``feats_l2`` as ``N x D``."""
        return self.body(x).reshape(x.shape[0], -1)

    def param_groups(self, net: McnNet) -> list[dict[str, Any]]:
        """One optimizer group per trained parameter with its MatConvNet multipliers."""
        return [{"params": [tensor], "lr_mult": net.params[name].learningRate,
                 "decay_mult": net.params[name].weightDecay, "name": name}
                for name, (tensor, _) in self.params.items()]


def _column(t: Tensor) -> Tensor:
    return t.reshape(-1, 1)


def _filter_to_mcn(t: Tensor) -> Tensor:
    """Cout x Cin x kh x kw -> kh x kw x Cin x Cout."""
    return t.permute(2, 3, 1, 0)


def _images(mat: dict[str, Any]) -> Tensor:
    """``images`` (H x W x C x N) as N x C x H x W."""
    arr = np.asarray(mat["images"])
    if arr.ndim != 4:
        raise InputError(f"field images must be H x W x C x N, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(3, 2, 0, 1)))


def _feats(value: Any, n: int) -> np.ndarray:
    """A saved ``1 x 1 x C x n`` activation as ``n x C``."""
    arr = np.asarray(value, dtype=np.float64)
    return arr.reshape(-1, n, order="F").T


# --- checking ------------------------------------------------------------------------------------

class _Checker:
    """Runs the two batches and collects rows as the run reaches each saved quantity."""

    def __init__(self, case: str, mat: dict[str, Any]) -> None:
        self.case = case
        self.mat = mat
        kernel = fixture_text(mat["lrn_kernel"]) if "lrn_kernel" in mat else "exact"
        if kernel not in TOLERANCES:
            raise InputError(f"unknown lrn_kernel {kernel!r} (known: {list(TOLERANCES)})")
        self.kernel = kernel
        self.tol = TOLERANCES[kernel]
        self.net = fixture_net(mat)
        self.model = StepNet(self.net)
        opts = mat["opts"]
        self.opts = {name: field(opts, name) for name in np.asarray(opts).dtype.names}
        self.optimizer = McnAdam(self.model.param_groups(self.net),
                                 lr=number(self.opts["learningRate"]),
                                 weight_decay=number(self.opts["weightDecay"]),
                                 betas=(number(self.opts["beta1"]), number(self.opts["beta2"])),
                                 eps=number(self.opts["eps"]))
        self.images = _images(mat)
        self.labels = torch.from_numpy(np.asarray(mat["labels"], dtype=np.float64)[:, 0])
        self.rows: list[ParityRow] = []
        self.tag = ""
        self.saved_step: Any = None
        self.opts_decay = number(self.opts["weightDecay"])
        # per parameter (MATLAB layout): Adam m and v bounds, allowance on the values
        self.bounds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def row(self, quantity: str, ours: Any, theirs: Any, kind: str, *, abs_tol: Any = 0.0,
            note: str = "") -> None:
        rel = self.tol[kind]
        text = f"rel {rel:g} ({kind}, {self.kernel})"
        if np.ndim(abs_tol) == 0 and abs_tol:
            text += f" + abs {float(abs_tol):.1e}"
        elif np.any(abs_tol):
            text += " + entrywise carried bound"
        self.rows.append(compare_row(self.case, f"{self.tag}.{quantity}", ours, theirs, rel=rel,
                                     abs_tol=abs_tol, tolerance=text, note=note))

    def run(self) -> list[ParityRow]:
        for k in (1, 2):
            name = f"step{k}"
            if name not in self.mat:
                continue
            self.run_batch(name, self.mat[name])
        return self.rows

    def run_batch(self, name: str, saved: Any) -> None:
        mode = fixture_text(field(saved, "mode"))
        batch = np.asarray(field(saved, "batch"), dtype=np.int64).ravel() - 1
        chunk_pos = [np.asarray(c, dtype=np.int64).ravel() - 1
                     for c in cell_list(field(saved, "chunks"))]
        max_gpu = int(number(self.opts["maxGpuImgs"]))
        self.saved_step = saved
        chunks_saved = cell_list(field(saved, "chunk"))
        stage1_saved = cell_list(field(saved, "stage1")) if mode == "train_staged" else []
        step_mode = {"train": "plain", "train_staged": "staged"}.get(mode)
        if step_mode is None:
            raise InputError(f"{name}.mode must be train or train_staged, got {mode!r}")
        self.tag = name
        images, labels = self.images[batch], self.labels[batch]

        def observer(event: str, **info: Any) -> None:
            index = info.get("index", 0)
            if event == "stage1":
                self.tag = f"{name}.stage1.chunk{index + 1}"
                self.check_activations(stage1_saved[index], info["chunk"], info["feats"])
            elif event == "stage2":
                self.tag = name
                M = batch.size
                self.row("embeddingMat", info["embeddingMat"],
                         _feats(field(saved, "embeddingMat"), M), "activation")
                self.row("gradientMat", info["gradientMat"],
                         _feats(field(saved, "gradientMat"), M), "gradient")
                self.row("obj_staged", [info["obj_staged"]], field(saved, "obj_staged"),
                         "objective")
            elif event == "chunk_backward":
                self.tag = f"{name}.chunk{index + 1}"
                chunk = chunks_saved[index]
                self.check_activations(chunk, info["chunk"], info["feats"])
                n = info["chunk"].stop - info["chunk"].start
                self.row("dzdfeats", info["dzdfeats"], _feats(field(chunk, "dzdfeats"), n),
                         "gradient")
                self.check_ders(field(chunk, "param_ders"), n, field(chunk, "params_before"))
            elif event == "chunk_step":
                self.tag = f"{name}.chunk{index + 1}"
                self.after_update()
                self.check_params(field(chunks_saved[index], "params_after"))

        ours = [np.arange(sub.start, sub.stop) for sub in chunk_slices(batch.size, max_gpu)]
        if step_mode == "plain":
            ours = [np.arange(batch.size)]
        if len(ours) != len(chunk_pos) or not all(
                np.array_equal(a, b) for a, b in zip(ours, chunk_pos, strict=True)):
            raise InputError(f"{name}: saved chunks are not maxGpuImgs={max_gpu} consecutive "
                             f"slices of the batch ({mode})")
        step = TrainStep(self.model, self.optimizer, num_bins=int(number(self.opts["nbins"])),
                         max_gpu_imgs=max_gpu, mode=step_mode, observer=observer)
        result = step(images, labels)
        self.tag = name
        self.row("batch_objective", [result.objective], field(saved, "batch_objective"),
                 "objective")
        self.check_params(field(saved, "params_after"))
        self.check_adam(field(saved, "adam"))

    def check_activations(self, saved: Any, sub: slice, feats: Tensor) -> None:
        n = sub.stop - sub.start
        for var, saved_name in (("pool", "pool"), ("logits", "logits")):
            tap = self.model.taps[var].value
            self.row(saved_name, tap.reshape(n, -1), _feats(field(saved, saved_name), n),
                     "activation")
        self.row("feats_l2", feats, _feats(field(saved, "feats_l2"), n), "activation")

    def check_ders(self, saved: Any, n: int, before: Any) -> None:
        """Every parameter derivative, and the bound each induces on the coming update."""
        names = list(np.asarray(saved).dtype.names)
        ders: dict[str, tuple[Tensor, np.ndarray]] = {}
        for name in names:
            theirs = np.asarray(field(saved, name), dtype=np.float64)
            if name in self.model.moments:
                bn = self.model.moments[name]
                if bn.batch_moments is None:
                    self.rows.append(ParityRow(self.case, f"{self.tag}.der.{name}",
                                               float("inf"), float("inf"), "recorded", "fail",
                                               "no batch moments recorded", float("inf")))
                    continue
                self.row(f"der.{name}", bn.batch_moments * n, theirs, "moments")
                continue
            tensor, to_mcn = self.model.params[name]
            if tensor.grad is None:
                raise InputError(f"parameter {name} got no derivative")
            ders[name] = (to_mcn(tensor.grad), theirs.reshape(tuple(to_mcn(tensor.grad).shape),
                                                              order="F"))
        # conv biases before a BatchNorm: der is rounding noise; absolute tolerance from the
        # other ders of the chunk (their relative tolerance times their scale)
        scale = max(float(np.abs(t).max()) for _, t in ders.values())
        self.pending = {}
        for name, (ours, theirs) in ders.items():
            before_bn = self._feeds_batchnorm(name)
            der_tol = self.tol["der"] * (scale if before_bn else float(np.abs(theirs).max()))
            self.row(f"der.{name}", ours, theirs, "der", abs_tol=der_tol if before_bn else 0.0,
                     note="conv bias before BatchNorm: zero up to rounding" if before_bn else "")
            # the update's gradient g = der/n + thisDecay w (MATLAB's), and its uncertainty
            w = np.asarray(field(before, name), dtype=np.float64).reshape(theirs.shape,
                                                                          order="F")
            decay = float(self.opts_decay) * self.net.params[name].weightDecay
            g = theirs / n + decay * w
            self.pending[name] = (g, np.full(theirs.shape, der_tol / n))

    def after_update(self) -> None:
        """Propagate the pending gradient bounds through the update just made.

        ``dm = b1 dm + (1-b1) dg`` and ``dv = b2 dv + (1-b2) (2|g| dg + dg^2)`` bound how far
        our Adam state may be from MATLAB's given the gradients' tolerance. The step
        ``lr_p bc m / (sqrt(v) + eps)`` may then differ by ``lr_p bc (dm / s_lo +
        (|m| + dm) ds / (s_lo s))`` (``s = sqrt(v) + eps``, ``s_lo`` from ``v - dv``, ``ds`` the
        spread of ``s`` over ``v +- dv``), never more than twice Adam's largest step
        ``lr_p S(t)`` (:func:`adam_step_bound`; reached when the gradient's sign itself is
        within its tolerance). The values' allowance is the sum over updates.
        """
        b1, b2 = self.optimizer.defaults["betas"]
        eps = self.optimizer.defaults["eps"]
        for name, (g, dg) in self.pending.items():
            tensor, to_mcn = self.model.params[name]
            state = self.optimizer.state.get(tensor, {})
            if not state:
                continue
            shape = g.shape
            dm, dv, allow = self.bounds.get(name, (np.zeros(shape), np.zeros(shape),
                                                   np.zeros(shape)))
            dm = b1 * dm + (1 - b1) * dg
            dv = b2 * dv + (1 - b2) * (2 * np.abs(g) * dg + dg * dg)
            t = state["t"]
            lr_p = self.optimizer.defaults["lr"] * self.net.params[name].learningRate
            bc = np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            m = np.abs(to_mcn(state["m"]).to(torch.float64).numpy()).reshape(shape)
            v = to_mcn(state["v"]).to(torch.float64).numpy().reshape(shape)
            s_mid = np.sqrt(v) + eps
            s_lo = np.sqrt(np.maximum(v - dv, 0.0)) + eps
            ds = np.sqrt(v + dv) - np.sqrt(np.maximum(v - dv, 0.0))
            dev = lr_p * bc * (dm / s_lo + (m + dm) * ds / (s_lo * s_mid))
            cap = 2 * lr_p * adam_step_bound(t, b1, b2)
            allow = allow + np.minimum(dev, cap)
            self.bounds[name] = (dm, dv, allow)
        self.pending = {}

    def _feeds_batchnorm(self, param: str) -> bool:
        """Whether ``param`` is the bias of a conv whose output goes into a BatchNorm."""
        layers = self.net.layers
        for i, layer in enumerate(layers):
            if layer.type == "dagnn.Conv" and len(layer.params) > 1 and layer.params[1] == param:
                readers = [nxt for nxt in layers[i + 1:] if layer.outputs[0] in nxt.inputs]
                return any(r.type == "dagnn.BatchNorm" for r in readers)
        return False

    def check_params(self, saved: Any) -> None:
        for name in np.asarray(saved).dtype.names:
            theirs = np.asarray(field(saved, name), dtype=np.float64)
            if name in self.model.moments:
                self.row(f"params.{name}", self.model.moments[name].moments, theirs, "moments")
                continue
            tensor, to_mcn = self.model.params[name]
            ours = to_mcn(tensor.detach())
            allow = self.bounds.get(name, (0.0, 0.0, np.zeros(tuple(ours.shape))))[2]
            self.row(f"params.{name}", ours, theirs.reshape(tuple(ours.shape), order="F"),
                     "param", abs_tol=allow,
                     note=f"plus the update bound carried from the gradients' tolerance "
                          f"(max {float(np.max(allow)):.1e})")

    def check_adam(self, saved: Any) -> None:
        for name in np.asarray(saved).dtype.names:
            tensor, to_mcn = self.model.params[name]
            state = self.optimizer.state.get(tensor, {})
            entry = field(saved, name)
            if not state:
                self.rows.append(ParityRow(self.case, f"{self.tag}.adam.{name}", float("inf"),
                                           float("inf"), "present", "fail", "no Adam state",
                                           float("inf")))
                continue
            dm, dv, _ = self.bounds.get(name, (0.0, 0.0, 0.0))
            for key, bound in (("m", dm), ("v", dv)):
                ours = to_mcn(state[key])
                theirs = np.asarray(field(entry, key), dtype=np.float64).reshape(
                    tuple(ours.shape), order="F")
                self.row(f"adam.{name}.{key}", ours, theirs, "adam", abs_tol=bound,
                         note="plus the bound carried from the gradients' tolerance")
            self.rows.append(compare_row(self.case, f"{self.tag}.adam.{name}.t", [state["t"]],
                                         field(entry, "t")))


def adam_step_bound(t: int, beta1: float, beta2: float) -> float:
    """The largest ``|m_hat| / sqrt(v_hat)`` after ``t`` updates, by Cauchy-Schwarz.

    ``m_hat = sum_k a_k g_k``, ``v_hat = sum_k c_k g_k^2`` with ``a_k = (1-b1) b1^k /
    (1-b1^t)``, ``c_k = (1-b2) b2^k / (1-b2^t)``: ``|m_hat| <= sqrt(sum a_k^2 / c_k)
    sqrt(v_hat)``. An Adam step moves an element by at most ``lr`` times this (1 at t = 1).
    """
    k = np.arange(int(t))
    a = (1 - beta1) * beta1 ** k / (1 - beta1 ** t)
    c = (1 - beta2) * beta2 ** k / (1 - beta2 ** t)
    return float(np.sqrt(np.sum(a * a / c)))


def check_step_fixture(path: Path, mat: dict[str, Any] | None = None) -> list[ParityRow]:
    """Train the saved network on the saved batches and compare every saved quantity."""
    path, mat = loaded_fixture(path, mat, STEP_REQUIRED, "a training-step")
    case = case_label(path, mat, "lrn_kernel")
    try:
        return _Checker(case, mat).run()
    except InputError as exc:
        raise InputError(f"{path}: not a valid training-step fixture: {exc}") from exc
