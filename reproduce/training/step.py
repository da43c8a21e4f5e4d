"""One training batch as ``train_hard.m`` runs it: plain mode, staged mode, and our variant.

``mode`` (``TrainStep(mode=...)``):

* ``"plain"`` (``train``; MATLAB uses it when ``M <= maxGpuImgs``): one normal-mode forward
  and backward over the whole batch (BatchNorm statistics over all ``M``), FastAP's gradient
  in the MATLAB convention (``FastAP.m``'s backward returns ``-0.5 d(sum AP)/dX``: our
  ``FastAPLoss(gradient="matlab")``), derivatives divided by ``M``, one optimizer step, one
  BatchNorm moments update.
* ``"staged"`` (``train_staged``, ``M > maxGpuImgs``; ``train_hard.m`` lines 320-359):
  stage 1, each chunk of at most ``maxGpuImgs`` consecutive images forwarded in test mode
  (stored BN moments) without gradients, embeddings gathered into a float64 matrix; stage 2,
  FastAP's gradient on the whole batch computed in float64 and returned in single precision,
  as ``computeGrad`` returns it; stage 3, per chunk a normal-mode forward (the chunk's own
  BN statistics) and a backward seeded with the chunk's slice of the gradient, derivatives
  divided by the chunk size, then ONE optimizer step and ONE moments update per chunk, so
  later chunks run on updated weights while the gradient came from stage-1 weights.
* ``"accumulate"`` (ours, not the authors'): stages 1 and 2 as staged, then the chunks'
  derivatives are summed (moments still updated after each chunk's forward) and one step per
  batch is taken with ``B = M``, as MatConvNet's own ``cnn_train_dag`` would with sub-batches.
* ``"auto"``: ``plain`` if ``M <= maxGpuImgs`` else ``staged``, the authors' choice.

Both passes of a staged batch see the same input tensor: flips are drawn once per image and
batch (:func:`draw_flips`, :func:`apply_flips`) before the step, as ``train_hard`` reads each
chunk once and caches it (``inputsCache``). MatConvNet's flips come from the C library's
``rand()`` in ``vl_imreadjpeg``, outside MATLAB's ``rng``: they cannot be replayed.

The model maps ``N x C x H x W`` images to embeddings (``N x D`` or ``N x D x 1 x 1``, already
L2-normalised) and holds :class:`~reproduce.training.batchnorm.McnBatchNorm2d` layers; its
``train()``/``eval()`` state is MatConvNet's ``net.mode`` ``'normal'``/``'test'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reproduce.errors import InputError
from reproduce.loss.fastap_loss import FastAPLoss
from reproduce.training.batchnorm import update_moments
from reproduce.training.optimizer import McnAdam

__all__ = [
    "BN_MODES",
    "STEP_MODES",
    "StepResult",
    "TrainStep",
    "apply_flips",
    "chunk_slices",
    "draw_flips",
    "embeddings_of",
]

STEP_MODES = ("auto", "plain", "staged", "accumulate")
#: BatchNorm during the gradient passes: ``normal`` (the authors') or ``test`` (frozen, ours)
BN_MODES = ("normal", "test")

#: ``observer(event, **info)`` is called at ``stage1``, ``stage2``, ``chunk_backward`` (param
#: ``.grad`` are the chunk's ders) and ``chunk_step`` (after its update), for parity checks.
Observer = Callable[..., None]


def chunk_slices(batch_size: int, max_gpu_imgs: int) -> list[slice]:
    """``sub = (s-1)*subBatchSize+1 : min(batchSize, s*subBatchSize)`` for every ``s``."""
    if max_gpu_imgs < 1:
        raise InputError(f"maxGpuImgs must be a positive integer, got {max_gpu_imgs}")
    n_sub = math.ceil(batch_size / max_gpu_imgs)
    return [slice(s * max_gpu_imgs, min(batch_size, (s + 1) * max_gpu_imgs))
            for s in range(n_sub)]


def draw_flips(n: int, generator: torch.Generator | None = None) -> Tensor:
    """One 50% horizontal-flip decision per image (``vl_imreadjpeg``'s ``Flip``), boolean."""
    return torch.rand(n, generator=generator) < 0.5


def apply_flips(images: Tensor, flips: Tensor) -> Tensor:
    """``images`` (``N x C x H x W``) with the flagged ones mirrored left-right."""
    if flips.shape != (images.shape[0],):
        raise InputError(f"flips: one flag per image expected ({images.shape[0]}), got shape "
                         f"{tuple(flips.shape)}")
    mask = flips.to(images.device).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def embeddings_of(model: nn.Module, images: Tensor) -> Tensor:
    """The model's output as ``N x D`` (MatConvNet's ``1 x 1 x D x N`` ``feats_l2``)."""
    out = model(images)
    return out.reshape(out.shape[0], -1)


@dataclass
class StepResult:
    """What one batch did: ``objective`` is the batch mean AP (``obj_staged`` in staged modes,
    the loss block's ``average`` in plain mode; NaN when no query has a positive)."""

    mode: str
    objective: float
    n_updates: int
    chunk_sizes: list[int] = field(default_factory=list)


def _has_positive(labels: Tensor) -> bool:
    """Whether some label occurs twice (else FastAP's average is NaN)."""
    return bool(torch.unique(labels, return_counts=True)[1].max() > 1)


class TrainStep:
    """Train ``model`` on one batch with MatConvNet's Adam (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: McnAdam, *, num_bins: int = 10,
                 max_gpu_imgs: int = 256, mode: str = "auto", bn_mode: str = "normal",
                 gradient_dtype: torch.dtype = torch.float32,
                 observer: Observer | None = None) -> None:
        if mode not in STEP_MODES:
            raise InputError(f"training step mode must be one of {STEP_MODES}, got {mode!r}")
        if bn_mode not in BN_MODES:
            raise InputError(f"BatchNorm mode must be one of {BN_MODES}, got {bn_mode!r}")
        if isinstance(max_gpu_imgs, bool) or int(max_gpu_imgs) != max_gpu_imgs \
                or max_gpu_imgs < 1:
            raise InputError(f"maxGpuImgs must be a positive integer, got {max_gpu_imgs!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss = FastAPLoss(num_bins, gradient="matlab")
        self.max_gpu_imgs = int(max_gpu_imgs)
        self.mode = mode
        self.bn_mode = bn_mode
        self.gradient_dtype = gradient_dtype
        self.observer = observer

    def _observe(self, event: str, **info: Any) -> None:
        if self.observer is not None:
            self.observer(event, **info)

    def _gradient_pass_mode(self) -> None:
        """``net.mode = 'normal'`` (or test mode for the frozen-BN variant)."""
        self.model.train(self.bn_mode == "normal")

    def resolved_mode(self, batch_size: int) -> str:
        """The mode a batch of ``batch_size`` runs in (``auto`` resolved as MATLAB does)."""
        if self.mode != "auto":
            return self.mode
        return "plain" if batch_size <= self.max_gpu_imgs else "staged"

    def __call__(self, images: Tensor, labels: Tensor) -> StepResult:
        """Train on one batch (images already flipped); returns the :class:`StepResult`."""
        if images.dim() != 4 or labels.dim() != 1 or labels.shape[0] != images.shape[0] \
                or images.shape[0] < 1:
            raise InputError(f"training step: images must be M x C x H x W (M >= 1) and labels "
                             f"M, got {tuple(images.shape)} and {tuple(labels.shape)}")
        mode = self.resolved_mode(images.shape[0])
        if mode == "plain":
            return self._plain(images, labels)
        return self._staged(images, labels, accumulate=mode == "accumulate")

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _plain(self, images: Tensor, labels: Tensor) -> StepResult:
        """``train``: one normal-mode forward/backward, one step, one moments update."""
        M = images.shape[0]
        device = self._device()
        self._gradient_pass_mode()
        self.optimizer.zero_grad(set_to_none=True)
        feats = embeddings_of(self.model, images.to(device))
        if self.observer is not None:
            feats.retain_grad()
        loss = self.loss(feats, labels.to(device))
        loss.backward()
        chunk = slice(0, M)
        if self.observer is not None:
            self._observe("chunk_backward", index=0, chunk=chunk, feats=feats.detach(),
                          dzdfeats=feats.grad)
        self.optimizer.step(batch_size=M)
        update_moments(self.model)
        self._observe("chunk_step", index=0, chunk=chunk)
        objective = 1.0 - float(loss.detach()) if _has_positive(labels) else float("nan")
        return StepResult("plain", objective, 1, [M])

    def _batch_gradient(self, embeddingMat: Tensor, labels: Tensor  # noqa: N803
                        ) -> tuple[Tensor, float]:
        """Stage 2 (``computeGrad``): FastAP's gradient on the whole gathered batch, in the
        precision of ``embeddingMat`` and returned in ``gradient_dtype``, and the batch mean
        AP (NaN when no query has a positive)."""
        E = embeddingMat.requires_grad_(True)  # noqa: N806
        loss = self.loss(E, labels.to(embeddingMat.device))
        loss.backward()
        gradientMat = E.grad.to(self.gradient_dtype)  # noqa: N806 (MATLAB name)
        obj_staged = 1.0 - float(loss.detach()) if _has_positive(labels) else float("nan")
        self._observe("stage2", embeddingMat=embeddingMat.detach(), gradientMat=gradientMat,
                      obj_staged=obj_staged)
        return gradientMat, obj_staged

    def _staged(self, images: Tensor, labels: Tensor, *, accumulate: bool) -> StepResult:
        """``train_staged`` (or the accumulate variant): stages 1, 2 and 3."""
        M = images.shape[0]
        device = self._device()
        chunks = chunk_slices(M, self.max_gpu_imgs)
        # stage 1: test-mode embeddings, chunk by chunk, gathered in double (inference mode:
        # no autograd bookkeeping; the gathered copy made outside it is an ordinary tensor)
        self.model.eval()
        parts = []
        with torch.inference_mode():
            for s, sub in enumerate(chunks):
                feats = embeddings_of(self.model, images[sub].to(device))
                parts.append(feats.to(torch.float64))
                self._observe("stage1", index=s, chunk=sub, feats=feats)
        embeddingMat = torch.cat(parts)  # noqa: N806 (MATLAB name)
        del parts
        # stage 2: FastAP's gradient on the whole batch, double, returned as single
        gradientMat, obj_staged = self._batch_gradient(embeddingMat, labels)  # noqa: N806
        # stage 3: per chunk a normal-mode forward, backward seeded with the gradient slice
        self._gradient_pass_mode()
        self.optimizer.zero_grad(set_to_none=True)
        for s, sub in enumerate(chunks):
            if not accumulate:
                self.optimizer.zero_grad(set_to_none=True)
            feats = embeddings_of(self.model, images[sub].to(device))
            seed = gradientMat[sub].to(feats.dtype)
            feats.backward(seed)
            self._observe("chunk_backward", index=s, chunk=sub, feats=feats.detach(),
                          dzdfeats=seed)
            if not accumulate:
                self.optimizer.step(batch_size=sub.stop - sub.start)
            update_moments(self.model)
            if not accumulate:
                self._observe("chunk_step", index=s, chunk=sub)
        if accumulate:
            self.optimizer.step(batch_size=M)
            self._observe("chunk_step", index=len(chunks) - 1, chunk=slice(0, M))
        sizes = [sub.stop - sub.start for sub in chunks]
        return StepResult("accumulate" if accumulate else "staged", obj_staged,
                          1 if accumulate else len(chunks), sizes)
