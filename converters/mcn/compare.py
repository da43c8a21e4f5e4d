"""Compare the reference executor's variables with a converted model's, var by var.

Three numbers per var, none of which can hide an error in the others: the max absolute
error, the relative L2 error ``||ours - ref|| / ||ref||`` and the cosine similarity.
Tolerances are per dtype of the side under test (see :data:`TOLERANCES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from converters.mcn.array_order import matlab_to_torch


@dataclass(frozen=True)
class Tolerance:
    """What every compared var must meet."""

    min_cosine: float
    max_rel_l2: float


# float32: what float32 rounding through a deep network allows (issue 3);
# float64: round-off only, many orders tighter.
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(min_cosine=0.99999, max_rel_l2=1e-5),
    "float64": Tolerance(min_cosine=1.0 - 1e-12, max_rel_l2=1e-10),
}


@dataclass(frozen=True)
class VarComparison:
    """One var compared: ``shape`` in PyTorch layout; ``problem`` is set when no numbers exist."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    rel_l2: float
    cosine: float
    problem: str = ""


def _compare_arrays(name: str, ref: np.ndarray, ours: np.ndarray) -> VarComparison:
    """The three error measures of ``ours`` against ``ref`` (same shape, float64 maths).

    NaN in the same places on both sides counts as agreement (an exact L2 normalisation of a
    zero vector gives NaN in MatConvNet too); NaN on one side only is a problem.
    """
    shape = tuple(ref.shape)
    ref_nan, our_nan = np.isnan(ref), np.isnan(ours)
    if not np.array_equal(ref_nan, our_nan):
        count = int(np.count_nonzero(ref_nan != our_nan))
        return VarComparison(name, shape, math.nan, math.nan, math.nan,
                             f"NaN in {count} places on one side only")
    ref = np.where(ref_nan, 0.0, ref)
    ours = np.where(our_nan, 0.0, ours)
    ref_inf, our_inf = np.isinf(ref), np.isinf(ours)
    if not np.array_equal(ref_inf, our_inf) or not np.array_equal(ref[ref_inf], ours[our_inf]):
        return VarComparison(name, shape, math.inf, math.inf, math.nan, "infinities differ")
    ref = np.where(ref_inf, 0.0, ref).ravel()
    ours = np.where(our_inf, 0.0, ours).ravel()
    diff = ours - ref
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    ref_norm, our_norm, diff_norm = (float(np.linalg.norm(v)) for v in (ref, ours, diff))
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf)
    if ref_norm > 0 and our_norm > 0:
        cosine = float(np.dot(ref, ours)) / (ref_norm * our_norm)
    else:
        cosine = 1.0 if ref_norm == our_norm else 0.0
    return VarComparison(name, shape, max_abs, rel_l2, cosine)


def compare_outputs(reference: dict[str, np.ndarray], ours: dict[str, torch.Tensor]
                    ) -> list[VarComparison]:
    """Compare every reference var (MATLAB layout) with ours (PyTorch layout), in reference order.

    A var missing on our side or of another shape gets a ``problem`` and NaN numbers. Vars
    only we have are ignored.
    """
    results: list[VarComparison] = []
    for name, ref_value in reference.items():
        ref = matlab_to_torch(np.asarray(ref_value)).astype(np.float64)
        if name not in ours:
            results.append(VarComparison(name, tuple(ref.shape), math.nan, math.nan, math.nan,
                                         "missing from the converted model's outputs"))
            continue
        mine = ours[name].detach().cpu().to(torch.float64).numpy()
        if mine.shape != ref.shape:
            results.append(VarComparison(name, tuple(ref.shape), math.nan, math.nan, math.nan,
                                         f"shape {list(mine.shape)}, reference "
                                         f"{list(ref.shape)}"))
            continue
        results.append(_compare_arrays(name, ref, mine))
    return results


def var_within_tolerance(comparison: VarComparison, dtype: str | np.dtype | torch.dtype
                         ) -> bool:
    """Whether one var has no problem and meets :data:`TOLERANCES` for ``dtype``."""
    tol = TOLERANCES[_dtype_name(dtype)]
    return (not comparison.problem and comparison.cosine >= tol.min_cosine
            and comparison.rel_l2 <= tol.max_rel_l2)


def within_tolerance(comparisons: list[VarComparison], dtype: str | np.dtype | torch.dtype
                     ) -> bool:
    """Whether every var passes :func:`var_within_tolerance`.

    ``dtype`` is the precision the converted model ran in (float32 or float64).
    """
    return all(var_within_tolerance(c, dtype) for c in comparisons)


def _dtype_name(dtype: str | np.dtype | torch.dtype) -> str:
    """``'float32'`` or ``'float64'`` for any spelling of those dtypes."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = np.dtype(dtype).name
    if name not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {dtype} (use float32 or float64)")
    return name
