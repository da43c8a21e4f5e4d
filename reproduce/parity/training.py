"""Parity of the training engine with saved runs of the authors' MATLAB training code.

Three families (``reproduce/parity/fixtures/training_matlab/README.md``), each detected by
its fields, any file name:

* sampler (``sampler``, ``labels``, ``set``, ``batchSize``, ``epochs``, ...): the meta-class
  analysis and every epoch of ``train_hard`` / ``train_hard_vid``, rebuilt from the
  recorded ``perms`` (replayed in draw order). Everything must be **identical**: these are
  integers.
* optimizer (``param_names``, ``param_info``, ``init``, ``der``, ``steps``, ...): three calls
  of ``accumulateGradients`` with ``solver.adam`` replayed by
  :class:`~reproduce.training.optimizer.McnAdam` and
  :func:`~reproduce.training.optimizer.average_update`. Tolerance: values, ``m`` and ``v``
  within ``2 u`` of the largest magnitude (``u`` the unit roundoff of the file's class), i.e.
  the last bit: the port performs MATLAB's operations in MATLAB's order and class, so it
  must agree to rounding (measured: bit-identical); ``t`` and empty states identical.
* training step (``layers``, ``params_init``, ``images``, ``step1``, ``step2``, ``opts``): see
  :mod:`reproduce.parity.training_step`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from reproduce.errors import InputError
from reproduce.parity.fixture_file import fixture_text, load_fixture
from reproduce.parity.row import ParityRow, error_ratio, flag_ratio
from reproduce.training.optimizer import McnAdam, average_update
from reproduce.training.sampler import (
    ReplayPermutations,
    analyse_metaclasses,
    train_hard_epoch,
    train_hard_vid_epoch,
)

__all__ = [
    "ADAM_REQUIRED",
    "SAMPLER_REQUIRED",
    "check_adam_fixture",
    "case_label",
    "check_sampler_fixture",
    "cell_list",
    "field",
    "is_adam_fixture",
    "is_sampler_fixture",
    "number",
    "compare_row",
]

SAMPLER_REQUIRED = ("sampler", "labels", "set", "batchSize", "epochs", "meta_ids", "meta_num")
ADAM_REQUIRED = ("param_names", "param_info", "init", "der", "steps", "batchSize",
                 "learningRate", "weightDecay")


# --- reading MATLAB structs and cells as scipy.io.loadmat returns them -----------------------

def field(struct: Any, name: str) -> Any:
    """``struct.name`` of a loaded 1x1 struct (``InputError`` when the field is missing)."""
    arr = np.asarray(struct)
    if arr.dtype.names is None or name not in arr.dtype.names:
        have = list(arr.dtype.names or [])
        raise InputError(f"missing struct field {name!r} (fields: {have})")
    value = arr.ravel()[0][name]
    return value


def cell_list(value: Any) -> list[Any]:
    """A loaded cell array's elements, in MATLAB's linear (column-major) order."""
    arr = np.asarray(value)
    if arr.dtype != object:
        return [arr]
    return list(arr.ravel(order="F"))


def number(value: Any) -> float:
    """A loaded MATLAB scalar as a float."""
    arr = np.asarray(value)
    if arr.dtype == object and arr.size == 1:
        return number(arr.ravel()[0])
    if arr.size != 1:
        raise InputError(f"expected a scalar, got shape {arr.shape}")
    return float(arr.ravel()[0])


def _is_text_named(mat: dict[str, Any], name: str) -> bool:
    """Whether ``mat[name]`` is text."""
    return np.asarray(mat.get(name, 0)).dtype.kind == "U"


# --- comparing ---------------------------------------------------------------------------------

def compare_row(case: str, quantity: str, ours: Any, theirs: Any, *, rel: float = 0.0,
                abs_tol: Any = 0.0, tolerance: str = "identical", note: str = ""
                ) -> ParityRow:
    """Compare two arrays (same number of entries; ``theirs`` gives the shape).

    Passes when every ``|ours - theirs| <= rel * max|theirs| + abs_tol`` (``abs_tol`` a scalar
    or an entrywise array of ``theirs``'s shape); ``rel = abs_tol = 0`` means identical.
    Errors are the max absolute difference and that relative to the largest MATLAB magnitude.
    """
    if isinstance(ours, torch.Tensor):
        ours = ours.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.size != b.size:
        return ParityRow(case, quantity, float("inf"), float("inf"), tolerance, "fail",
                         f"{a.size} entries vs MATLAB's {b.size} (shape {b.shape})",
                         float("inf"))
    a = a.reshape(b.shape, order="F") if a.shape != b.shape else a
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return ParityRow(case, quantity, float("inf"), float("inf"), tolerance, "fail",
                         "NaN at different entries", float("inf"))
    keep = ~np.isnan(b)
    diff = np.abs(a[keep] - b[keep])
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b[keep]).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    allowed = rel * scale + np.broadcast_to(np.asarray(abs_tol, dtype=np.float64), b.shape)[keep]
    over = diff > allowed
    passed = not bool(over.any())
    if not passed:
        extra = f"{int(np.count_nonzero(over))} of {diff.size} entries over their bound"
        note = f"{note}; {extra}" if note else extra
    return ParityRow(case, quantity, max_abs, max_rel, tolerance, "pass" if passed else "fail",
                     note, error_ratio(diff, allowed))


def case_label(path: Path, mat: dict[str, Any], *variants: str) -> str:
    """The file's ``case_name`` (or its stem), with the text of the ``variants`` fields
    appended (``precision``, ``lrn_kernel``: files of one case differ only there)."""
    case = path.stem
    if "case_name" in mat and _is_text_named(mat, "case_name"):
        case = fixture_text(mat["case_name"]) or path.stem
    for name in variants:
        if name in mat and _is_text_named(mat, name):
            suffix = fixture_text(mat[name])
            if suffix and not case.endswith(f"_{suffix}"):
                case = f"{case}_{suffix}"
    return case


# --- sampler -----------------------------------------------------------------------------------

def is_sampler_fixture(mat: dict[str, Any]) -> bool:
    """Whether a loaded MAT dict is a saved run of ``train_hard``'s batch construction."""
    return all(name in mat for name in SAMPLER_REQUIRED)


def loaded_fixture(path: str | Path, mat: dict[str, Any] | None, required: tuple[str, ...],
                   what: str) -> tuple[Path, dict[str, Any]]:
    """``(path, variables)`` of a fixture of one family; missing fields are an error."""
    path = Path(path)
    mat = load_fixture(path) if mat is None else mat
    missing = [f for f in required if f not in mat]
    if missing:
        raise InputError(f"{path}: not {what} fixture, missing fields {missing}")
    return path, mat


def check_sampler_fixture(path: Path, mat: dict[str, Any] | None = None) -> list[ParityRow]:
    """Rebuild every saved epoch from its recorded ``perms``; everything must be identical."""
    path, mat = loaded_fixture(path, mat, SAMPLER_REQUIRED, "a sampler")
    case = case_label(path, mat)
    sampler = fixture_text(mat["sampler"])
    if sampler not in ("train_hard", "train_hard_vid"):
        raise InputError(f"{path}: field sampler must be train_hard or train_hard_vid, "
                         f"got {sampler!r}")
    try:
        index = analyse_metaclasses(mat["labels"], mat["set"])
        M = int(number(mat["batchSize"]))
        rows = [compare_row(case, "meta_ids", index.meta_ids, mat["meta_ids"]),
                compare_row(case, "meta_num", index.meta_num, mat["meta_num"])]
        if "train_idx" in mat:
            rows.append(compare_row(case, "train_idx", index.train_idx + 1, mat["train_idx"]))
        if "meta_groups" in mat:
            ours = np.concatenate([np.concatenate(index.groups(i)) for i in range(index.Nmeta)])
            theirs = np.concatenate([np.concatenate([np.ravel(g) for g in cell_list(groups)])
                                     for groups in cell_list(mat["meta_groups"])])
            sizes_ok = [len(index.groups(i)) for i in range(index.Nmeta)] == \
                [len(cell_list(g)) for g in cell_list(mat["meta_groups"])]
            rows.append(compare_row(case, "meta_groups", ours + 1 if sizes_ok else [], theirs,
                                    note="" if sizes_ok else "class counts differ"))
        for e, epoch in enumerate(cell_list(mat["epochs"]), start=1):
            rows.extend(_check_epoch(case, f"epoch{e}", sampler, index, M, mat, epoch))
    except InputError as exc:
        raise InputError(f"{path}: not a valid sampler fixture: {exc}") from exc
    return rows


def _check_epoch(case: str, tag: str, sampler: str, index: Any, M: int, mat: dict[str, Any],
                 epoch: Any) -> list[ParityRow]:
    """The rows of one saved epoch."""
    source = ReplayPermutations(cell_list(field(epoch, "perms")))
    if sampler == "train_hard":
        plan = train_hard_epoch(index, M, int(number(mat["batchesPerMetaPair"])), source)
    else:
        plan = train_hard_vid_epoch(index, M, source)
    rows = []
    saved_lists = cell_list(field(epoch, "metaC_idx"))
    if len(saved_lists) == len(plan.metaC_idx):
        ours = np.concatenate(plan.metaC_idx) + 1
        theirs = np.concatenate([np.ravel(x) for x in saved_lists])
        rows.append(compare_row(case, f"{tag}.metaC_idx", ours, theirs))
    else:
        rows.append(ParityRow(case, f"{tag}.metaC_idx", float("inf"), float("inf"),
                              "identical", "fail",
                              f"{len(plan.metaC_idx)} lists vs MATLAB's {len(saved_lists)}",
                              float("inf")))
    if sampler == "train_hard":
        rows.append(compare_row(case, f"{tag}.metaPairs", plan.metaPairs + 1,
                                field(epoch, "metaPairs")))
        rows.append(compare_row(case, f"{tag}.numBatches", [plan.numBatches],
                                field(epoch, "numBatches")))
    else:
        rows.append(compare_row(case, f"{tag}.numBatches", plan.batches_per_meta,
                                field(epoch, "numBatches")))
    # MATLAB's batches are M x numBatches: ours transposed
    rows.append(compare_row(case, f"{tag}.batches", plan.batches.T + 1, field(epoch, "batches")))
    rows.append(compare_row(case, f"{tag}.batches_img", plan.batches_img.T + 1,
                            field(epoch, "batches_img")))
    unused = source.remaining
    rows.append(ParityRow(case, f"{tag}.perms", float(unused), float(unused), "all used",
                          "pass" if unused == 0 else "fail",
                          "" if unused == 0 else f"{unused} recorded draws left over",
                          flag_ratio(unused == 0)))
    return rows


# --- optimizer ---------------------------------------------------------------------------------

def is_adam_fixture(mat: dict[str, Any]) -> bool:
    """Whether a loaded MAT dict is a saved sequence of ``accumulateGradients`` calls."""
    return all(name in mat for name in ADAM_REQUIRED)


def _unit_roundoff(dtype: torch.dtype) -> float:
    """``u``: 2^-24 (single) or 2^-53 (double)."""
    return float(torch.finfo(dtype).eps) / 2


def _array(value: Any) -> np.ndarray:
    """A loaded numeric array in native byte order, class kept."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"expected a numeric array, got {arr.dtype}")
    return np.array(arr, dtype=arr.dtype.newbyteorder("="))


def check_adam_fixture(path: Path, mat: dict[str, Any] | None = None) -> list[ParityRow]:
    """Replay the saved ``accumulateGradients`` calls and compare after every call."""
    path, mat = loaded_fixture(path, mat, ADAM_REQUIRED, "an optimizer")
    case = case_label(path, mat, "precision")
    try:
        return _replay_adam(case, mat)
    except InputError as exc:
        raise InputError(f"{path}: not a valid optimizer fixture: {exc}") from exc


def _replay_adam(case: str, mat: dict[str, Any]) -> list[ParityRow]:
    """The optimizer family's rows (see the module docstring for the tolerances)."""
    names = [fixture_text(n) for n in cell_list(mat["param_names"])]
    info = {n: field(mat["param_info"], n) for n in names}
    init = {n: field(mat["init"], n) for n in names}
    B = number(mat["batchSize"])
    params = {n: torch.nn.Parameter(torch.from_numpy(_array(field(init[n], "value"))))
              for n in names}
    average = {n for n in names if fixture_text(field(info[n], "trainMethod")) == "average"}
    groups = [{"params": [params[n]], "lr_mult": number(field(info[n], "learningRate")),
               "decay_mult": number(field(info[n], "weightDecay"))}
              for n in names if n not in average]
    opt = McnAdam(groups, lr=number(mat["learningRate"]), weight_decay=number(mat["weightDecay"]),
                  betas=(number(mat.get("beta1", 0.9)), number(mat.get("beta2", 0.999))),
                  eps=number(mat.get("eps", 1e-8)))
    for n in names:
        if n not in average and not number(field(init[n], "state_is_zero")):
            like = params[n]
            opt.state[like].update(
                m=torch.from_numpy(_array(field(init[n], "m"))).to(like.dtype).reshape(like.shape),
                v=torch.from_numpy(_array(field(init[n], "v"))).to(like.dtype).reshape(like.shape),
                t=int(number(field(init[n], "t"))))
    rows: list[ParityRow] = []
    steps = cell_list(mat["steps"])
    for k, saved in enumerate(steps, start=1):
        ders = field(mat["der"], f"step{k}")
        for n in names:
            der = torch.from_numpy(_array(field(ders, n))).to(params[n].dtype)
            params[n].grad = der.reshape(params[n].shape)
        opt.step(batch_size=B)
        with torch.no_grad():
            for n in average:
                rate = number(field(info[n], "learningRate"))
                fanout = number(field(info[n], "fanout"))
                params[n].copy_(average_update(params[n], params[n].grad, rate, B, fanout))
        for n in names:
            rows.extend(_adam_rows(case, f"step{k}.{n}", params[n], opt.state.get(params[n], {}),
                                   field(saved, n)))
    return rows


def _adam_rows(case: str, tag: str, param: torch.Tensor, state: dict[str, Any],
               saved: Any) -> list[ParityRow]:
    """Rows for one parameter after one call: value, then m, v, t or the empty state."""
    u = _unit_roundoff(param.dtype)
    cls = "single" if param.dtype == torch.float32 else "double"
    tol = f"2u of max|x|, {cls}"
    rows = [compare_row(case, f"{tag}.value", param, field(saved, "value"), rel=2 * u,
                        tolerance=tol)]
    if number(field(saved, "state_is_zero")):
        empty = not state
        rows.append(ParityRow(case, f"{tag}.state", 0.0 if empty else 1.0,
                              0.0 if empty else 1.0, "empty (the number 0)",
                              "pass" if empty else "fail",
                              "" if empty else "our state is not empty", flag_ratio(empty)))
        return rows
    if not state:
        rows.append(ParityRow(case, f"{tag}.state", 1.0, 1.0, "m, v, t present", "fail",
                              "MATLAB has a state, ours is empty", float("inf")))
        return rows
    rows.append(compare_row(case, f"{tag}.m", state["m"], field(saved, "m"), rel=2 * u,
                            tolerance=tol))
    rows.append(compare_row(case, f"{tag}.v", state["v"], field(saved, "v"), rel=2 * u,
                            tolerance=tol))
    rows.append(compare_row(case, f"{tag}.t", [state["t"]], field(saved, "t")))
    return rows
