"""MatConvNet's Adam (``examples/+solver/adam.m``) as ``train_hard``'s ``accumulateGradients``
drives it, and the ``'average'`` update of BatchNorm moments.

Per parameter ``p`` and call (``train_hard.m`` lines 446-477), with ``B`` the batch (plain) or
chunk (staged) size passed to :meth:`McnAdam.step`:

* ``thisLR = lr * learningRate_p``, ``thisDecay = wdecay * weightDecay_p``; if both are 0 the
  parameter is skipped (its state stays empty);
* ``g = (1/B) * der + thisDecay * w`` (``vl_taccum``: coupled L2 decay, not decoupled);
* ``m = beta1 m + (1-beta1) g``, ``v = beta2 v + (1-beta2) g.^2``, ``t = t + 1``;
* ``w = w - (thisLR * sqrt(1-beta2^t) / (1-beta1^t)) * m ./ (sqrt(v) + eps)``.

This differs from ``torch.optim.Adam`` in where ``eps`` sits (torch's ``eps`` is MatConvNet's
divided by ``sqrt(1 - beta2^t)``) and in the coupled decay with its own multiplier. The
arithmetic follows MATLAB's class rules: the scalar factors are formed in double and meet the
arrays in the arrays' class, one rounding per MATLAB operation, in MATLAB's order.

Multipliers come from param groups: ``lr_mult`` (MatConvNet ``learningRate``, 10 on ``fc``
in the authors' model) and ``decay_mult`` (``weightDecay``), both default 1. A parameter
whose ``.grad`` is ``None`` is left alone (torch's convention; MatConvNet always has a der).

BatchNorm moments with ``trainMethod 'average'`` are not Adam parameters: they are buffers
updated by :func:`average_update` (``moments = (1 - rho) moments + (rho / B / fanout) der``
with ``der`` = batch moments times ``B`` as ``BatchNorm.backward`` leaves it, i.e.
``(1 - rho) moments + rho batch_moments`` with ``rho = 0.1``, independent of ``lr``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reproduce.errors import InputError

__all__ = ["McnAdam", "adam_update_", "average_update", "coupled_gradient"]


def _scal(value: float, like: Tensor) -> Tensor:
    """A double scalar converted to ``like``'s class, as MATLAB does before single arithmetic."""
    return torch.tensor(value, dtype=torch.float64).to(like.dtype)


def _sqrt(x: Tensor) -> Tensor:
    """Correctly rounded ``sqrt`` (as MATLAB's). torch's vectorised float32 ``sqrt`` on CPU
    can be off by an ulp; numpy's (the hardware instruction) is exact, and so are CUDA's
    ``sqrt`` and float64 roots."""
    if x.dtype == torch.float32 and x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.detach().contiguous().numpy()))
    if x.dtype in (torch.float32, torch.float64):
        return torch.sqrt(x)
    return torch.sqrt(x.to(torch.float64)).to(x.dtype)


def coupled_gradient(der: Tensor, value: Tensor, batch_size: float, this_decay: float) -> Tensor:
    """``vl_taccum(1/batchSize, der, thisDecay, value)``: ``(1/B) der + thisDecay w`` (a new
    tensor; the decay term is left out when ``thisDecay`` is 0, where it adds zeros)."""
    g = der * _scal(1.0 / batch_size, der)
    if this_decay != 0:
        g.add_(value * _scal(this_decay, value))
    return g


def adam_update_(value: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, lr: float,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> int:
    """One call of ``solver.adam``, in place on ``value``, ``m``, ``v`` (fresh state: zeros,
    ``t`` 0); ``g`` is consumed. Returns the new ``t``. One rounding per MATLAB operation:
    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g.^2``, then
    ``w = w - (lr sqrt(1-b2^t)/(1-b1^t)) m ./ (sqrt(v) + eps)``.
    """
    m.mul_(_scal(beta1, m)).add_(g * _scal(1.0 - beta1, g))
    g.mul_(g).mul_(_scal(1.0 - beta2, g))
    v.mul_(_scal(beta2, v)).add_(g)
    t_new = int(t) + 1
    bias_correction = math.sqrt(1.0 - beta2 ** t_new) / (1.0 - beta1 ** t_new)
    denominator = _sqrt(v).add_(_scal(eps, v))
    value.sub_((m * _scal(lr * bias_correction, m)).div_(denominator))
    return t_new


def average_update(value: Tensor, der: Tensor, rate: float = 0.1, batch_size: float = 1.0,
                   fanout: float = 1.0) -> Tensor:
    """``trainMethod 'average'``: ``vl_taccum(1 - rate, value, rate/batchSize/fanout, der)``.

    For BatchNorm moments ``der`` is ``[mu sigma]`` of the batch times its size, so this is
    ``(1 - rate) moments + rate [mu sigma]`` (rounded as MATLAB does).
    """
    return value * _scal(1.0 - rate, value) + der * _scal(rate / batch_size / fanout, der)


class McnAdam(torch.optim.Optimizer):
    """MatConvNet's Adam with ``train_hard``'s derivative scaling and coupled weight decay.

    ``lr`` is ``opts.learningRate`` (1e-5 in the authors' runs), ``weight_decay`` is
    ``opts.weightDecay`` (0), ``betas``/``eps`` the solver's fixed defaults. Param groups may
    set ``lr_mult`` and ``decay_mult`` (MatConvNet's per-parameter ``learningRate`` and
    ``weightDecay``). :meth:`step` takes ``batch_size``: the number of images the ders were
    summed over (``B``); the ``.grad`` of each parameter is MatConvNet's ``der``.
    Per-parameter state: ``m``, ``v`` (parameter dtype) and ``t`` (int), empty until the
    parameter's first update.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-5,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or eps <= 0:
            raise InputError(f"McnAdam: lr and weight_decay must be >= 0 and eps > 0, got "
                             f"lr={lr}, weight_decay={weight_decay}, eps={eps}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise InputError(f"McnAdam: betas must lie in [0, 1), got {betas}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "lr_mult": 1.0, "decay_mult": 1.0}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None, *, batch_size: float = 1.0) -> None:  # type: ignore[override]
        """One ``accumulateGradients`` call over every parameter with a ``.grad``."""
        if closure is not None:
            raise InputError("McnAdam.step: closures are not supported (MatConvNet has none)")
        if not batch_size > 0:
            raise InputError(f"McnAdam.step: batch_size must be positive, got {batch_size}")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            this_lr = group["lr"] * group["lr_mult"]
            this_decay = group["weight_decay"] * group["decay_mult"]
            if this_lr == 0 and this_decay == 0:
                continue  # ``if thisLR>0 || thisDecay>0``: skipped, state stays empty
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["t"] = 0
                g = coupled_gradient(p.grad, p, batch_size, this_decay)
                state["t"] = adam_update_(p, g, state["m"], state["v"], state["t"], this_lr,
                                          beta1, beta2, group["eps"])
