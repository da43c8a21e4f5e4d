"""MatConvNet's ``dagnn.BatchNorm`` for training, and swapping it into a torch model and back.

:class:`McnBatchNorm2d` keeps MatConvNet's three parameters: ``mult`` and ``bias`` (trained by
the optimizer) and ``moments`` (``C x 2`` ``[mu sigma]``, a buffer, ``trainMethod 'average'``).

* ``net.mode = 'normal'`` (``module.train()``): normalise with the chunk's own mean and biased
  variance plus ``epsilon`` (``vl_nnbnorm``; the backward is the full batch-statistics
  gradient), and record the batch moments ``[mu, sqrt(var + epsilon)]`` for the moments
  update, as ``BatchNorm.backward`` leaves them in the moments' ``der`` (times the number of
  images, ``BatchNorm.m`` line 37 of MatConvNet 1.0-beta25).
* ``net.mode = 'test'`` (``module.eval()``): ``mult / sigma * (x - mu) + bias`` from the stored
  moments, no epsilon (MatConvNet's CPU kernel order: the coefficient first).
* :meth:`McnBatchNorm2d.update_moments` is ``accumulateGradients``' ``'average'`` case:
  ``moments = (1 - rate) moments + (rate / n) * (n [mu sigma])`` with ``rate`` 0.1
  (``BatchNorm.attach``), independent of the learning rate, once per recorded forward.

The converted torchvision models (``converters.fastap.families``) fold MatConvNet's BatchNorm
for inference: ``weight = mult / sigma`` (divided in float64, rounded once), ``running_mean =
mu``, ``running_var = 1``, ``eps = 0``. :func:`swap_to_torch` writes exactly that, and
:func:`swap_to_mcn` inverts it as far as it is invertible: ``mu = running_mean``,
``sigma = sqrt(running_var + eps)``, ``mult = weight``. Both are exact in test mode (the same
coefficient ``mult / sigma`` reaches every channel both ways). The fold loses the split of
``mult / sigma`` into ``mult`` and ``sigma``, which normal-mode training needs (its output
scale is ``mult``); pass ``sources`` (e.g. :func:`mcn_sources` of the MatConvNet checkpoint)
to restore MatConvNet's own ``mult``, ``bias`` and ``moments`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from reproduce.errors import InputError
from reproduce.training.optimizer import average_update

__all__ = [
    "BN_EPSILON",
    "BN_RATE",
    "McnBatchNorm2d",
    "mcn_batchnorms",
    "mcn_sources",
    "swap_to_mcn",
    "swap_to_torch",
    "update_moments",
]

BN_EPSILON = 1e-5  #: ``dagnn.BatchNorm``'s default ``epsilon``
BN_RATE = 0.1  #: the moments' ``learningRate`` set by ``BatchNorm.attach``


class McnBatchNorm2d(nn.Module):
    """``dagnn.BatchNorm`` on ``N x C x H x W`` input (see the module docstring)."""

    def __init__(self, num_channels: int, *, epsilon: float = BN_EPSILON, rate: float = BN_RATE,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        if epsilon < 0 or not 0 <= rate <= 1:
            raise InputError(f"McnBatchNorm2d: epsilon must be >= 0 and rate in [0, 1], got "
                             f"{epsilon}, {rate}")
        kw = {"dtype": dtype, "device": device}
        self.num_channels = int(num_channels)
        self.epsilon = float(epsilon)
        self.rate = float(rate)
        self.mult = nn.Parameter(torch.ones(num_channels, **kw))
        self.bias = nn.Parameter(torch.zeros(num_channels, **kw))
        moments = torch.zeros(num_channels, 2, **kw)
        moments[:, 1] = 1.0
        self.register_buffer("moments", moments)
        self.batch_moments: Tensor | None = None
        self.batch_count = 0

    def forward(self, x: Tensor) -> Tensor:
        """Normal mode (``train()``): batch statistics, moments recorded; test mode: stored."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"McnBatchNorm2d({self.num_channels}): expected N x "
                             f"{self.num_channels} x H x W, got {tuple(x.shape)}")
        if self.training:
            # one pass for the statistics and the normalisation; its saved mean and 1/sigma
            # are the batch moments (sigma = 1 / invstd, formed in float64)
            y, mu, invstd = torch.native_batch_norm(x, self.mult, self.bias, None, None, True,
                                                    0.0, self.epsilon)
            with torch.no_grad():
                sigma = (1.0 / invstd.detach().to(torch.float64)).to(x.dtype)
                self.batch_moments = torch.stack([mu.detach().to(x.dtype), sigma], dim=1)
                self.batch_count = int(x.shape[0])
            return y
        mu = self.moments[:, 0].view(1, -1, 1, 1)
        coefficient = (self.mult / self.moments[:, 1]).view(1, -1, 1, 1)
        return (x - mu) * coefficient + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def update_moments(self) -> bool:
        """Apply the recorded batch moments (``'average'``, rate ``self.rate``) once.

        Returns whether there was a recorded forward to apply.
        """
        if self.batch_moments is None:
            return False
        n = self.batch_count
        der = self.batch_moments * torch.tensor(float(n), dtype=torch.float64).to(
            self.batch_moments.dtype)  # as BatchNorm.backward leaves it (times n)
        self.moments.copy_(average_update(self.moments, der, self.rate, n))
        self.batch_moments = None
        return True

    def extra_repr(self) -> str:
        return f"{self.num_channels}, epsilon={self.epsilon:g}, rate={self.rate:g}"


def mcn_batchnorms(model: nn.Module) -> list[McnBatchNorm2d]:
    """Every :class:`McnBatchNorm2d` of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, McnBatchNorm2d)]


def update_moments(model: nn.Module) -> int:
    """``update_moments`` on every MatConvNet BatchNorm of ``model``; returns how many moved."""
    return sum(bn.update_moments() for bn in mcn_batchnorms(model))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted module path ``name`` of ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _as(value: np.ndarray | Tensor, like: Tensor) -> Tensor:
    """A value as a tensor of ``like``'s dtype and device (one rounding from float64)."""
    t = value if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value, np.float64))
    return t.detach().to(like.device, torch.float64).reshape(like.shape).to(like.dtype)


def swap_to_mcn(model: nn.Module, *, epsilon: float = BN_EPSILON, rate: float = BN_RATE,
                sources: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
                ) -> dict[str, McnBatchNorm2d]:
    """Replace every ``nn.BatchNorm2d`` of ``model`` (in place) by an :class:`McnBatchNorm2d`.

    ``sources`` maps a module name to MatConvNet's ``(mult, bias, moments)`` for it (then those
    are used exactly); otherwise ``mult = weight``, ``bias = bias``, ``mu = running_mean``,
    ``sigma = sqrt(running_var + eps)`` (exact in test mode, see the module docstring).
    ``epsilon`` is the normal-mode epsilon (the torch module's ``eps`` is the test-time one,
    0 in converted models). Returns the new modules by name.
    """
    swapped: dict[str, McnBatchNorm2d] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.BatchNorm2d):
            continue
        if module.weight is None or module.running_mean is None:
            raise InputError(f"swap_to_mcn: BatchNorm {name!r} needs affine parameters and "
                             f"running statistics")
        new = McnBatchNorm2d(module.num_features, epsilon=epsilon, rate=rate,
                             dtype=module.weight.dtype, device=module.weight.device)
        with torch.no_grad():
            if sources is not None and name in sources:
                mult, bias, moments = sources[name]
                new.mult.copy_(_as(mult, new.mult))
                new.bias.copy_(_as(bias, new.bias))
                new.moments.copy_(_as(moments, new.moments))
            else:
                sigma = torch.sqrt(module.running_var.to(torch.float64) + module.eps)
                new.mult.copy_(module.weight)
                new.bias.copy_(module.bias)
                new.moments[:, 0] = module.running_mean
                new.moments[:, 1] = sigma.to(new.moments.dtype)
        new.train(module.training)
        _replace(model, name, new)
        swapped[name] = new
    if sources is not None:
        unknown = sorted(set(sources) - set(swapped))
        if unknown:
            raise InputError(f"swap_to_mcn: no BatchNorm2d named {unknown[:5]} in the model")
    return swapped


def swap_to_torch(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Replace every :class:`McnBatchNorm2d` by the converter's inference ``nn.BatchNorm2d``:
    ``weight = mult / sigma`` (float64 division, one rounding), ``running_mean = mu``,
    ``running_var = 1``, ``eps = 0``."""
    swapped: dict[str, nn.BatchNorm2d] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, McnBatchNorm2d):
            continue
        bn = nn.BatchNorm2d(module.num_channels, eps=0.0, dtype=module.mult.dtype,
                            device=module.mult.device)
        with torch.no_grad():
            m64 = module.moments.to(torch.float64)
            bn.weight.copy_((module.mult.to(torch.float64) / m64[:, 1]).to(bn.weight.dtype))
            bn.bias.copy_(module.bias)
            bn.running_mean.copy_(module.moments[:, 0])
            bn.running_var.fill_(1.0)
        bn.train(module.training)
        _replace(model, name, bn)
        swapped[name] = bn
    return swapped


def mcn_sources(net: object, model: nn.Module) -> dict[str, tuple[np.ndarray, ...]]:
    """MatConvNet's ``(mult, bias, moments)`` of every BatchNorm of a converted FastAP model.

    ``net`` is the ``McnNet`` the ``FastAPEmbedding`` ``model`` was converted from; the layer
    of each module is found with the converter's own ``family_layout``.
    """
    from converters.fastap.families import family_layout

    layout = family_layout(model.family, model.base)  # type: ignore[attr-defined]
    names = {id(module): name for name, module in model.named_modules()}
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for layer_name, bn in layout.bns.items():
        layer = net.layer(layer_name)  # type: ignore[attr-defined]
        if len(layer.params) != 3:
            raise InputError(f"layer {layer_name!r}: a BatchNorm needs 3 params (mult, bias, "
                             f"moments), has {layer.params}")
        values = tuple(np.asarray(net.params[p].value, dtype=np.float64)  # type: ignore
                       for p in layer.params)
        out[names[id(bn)]] = (values[0].ravel(), values[1].ravel(),
                              values[2].reshape(-1, 2, order="F"))
    return out
