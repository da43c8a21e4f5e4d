"""Training FastAP as the authors' ``train_hard.m`` did (the engine lands here).

Planned modules: the meta-class sampler (``train_hard`` and ``train_hard_vid``), MatConvNet
BatchNorm with its moments update, MatConvNet's Adam with per-parameter multipliers, the
plain and staged training steps, and the run loop behind ``fastap train``.
"""
