"""Training FastAP as the authors' ``train_hard.m`` did (MatConvNet semantics in PyTorch).

Modules:

- :mod:`~reproduce.training.sampler`: the meta-class analysis and the ``train_hard`` /
  ``train_hard_vid`` minibatch samplers (pluggable, replayable randomness; a resumable
  ``torch.utils.data`` batch sampler), plus our class-balanced sampler for datasets without
  meta-classes;
- :mod:`~reproduce.training.optimizer`: MatConvNet's Adam with ``accumulateGradients``'
  derivative scaling, coupled weight decay and per-parameter multipliers, and the
  ``'average'`` update of BatchNorm moments;
- :mod:`~reproduce.training.batchnorm`: ``dagnn.BatchNorm`` for training (batch statistics in
  normal mode, stored moments without epsilon in test mode) and the exact swap to and from
  the converter's inference BatchNorm;
- :mod:`~reproduce.training.step`: one batch in plain, staged (``train_staged``) or
  accumulate mode, with the per-image flips drawn once per batch;
- :mod:`~reproduce.training.distributed`: the step over the ranks of a ``torchrun`` process
  group (``DistributedTrainStep``, ``SyncMcnBatchNorm2d``/``sync_batchnorms``,
  ``all_reduce_gradients``, ``broadcast_state``, ``replicas_equal``; ``init_from_env`` and
  ``rank_slice`` re-exported from :mod:`reproduce.evaluation.distributed`), see
  ``docs/distributed.md``.

The run behind ``fastap train`` (docs/train.md):

- :mod:`~reproduce.training.experiment`: the options with the authors' defaults and the
  experiment folder; :mod:`~reproduce.training.model`: the start network (MatConvNet base,
  converted model or torchvision weights); :mod:`~reproduce.training.data`: the input;
- :mod:`~reproduce.training.run`: the epoch loop (step from an injectable factory),
  evaluation, checkpoints; :mod:`~reproduce.training.checkpoint`: atomic, resumable
  checkpoints; :mod:`~reproduce.training.export`: ``net-epoch-N.mat`` for ``fastap
  convert``; :mod:`~reproduce.training.diary`: the authors' diary lines;
- :mod:`~reproduce.training.small_run`: the main job's small local run.

The parity of each piece with saved MATLAB runs is in :mod:`reproduce.parity.training` and
:mod:`reproduce.parity.training_step`; ``docs/training.md`` describes both.
"""
