"""FastAP reproduction: the loss and its parity, evaluation, training, reports and the CLI.

Public entry points (imported on first use, so ``import reproduce`` stays light):

- ``FastAPLoss``, ``fastap_loss``: the FastAP loss in PyTorch (``reproduce.loss``);
- ``recall_at_k``: Recall@K exactly as ``evaluate_model.m``; ``evaluate``: a converted model
  on a dataset (``reproduce.evaluation``); ``load_dataset``: the dataset readers;
- ``run_parity``: every saved MATLAB fixture against the port (``reproduce.parity``);
- ``load_model``, ``load_mat``, ``read_network`` (from ``converters``) and
  ``parse_diaries`` (from ``logs``), re-exported so one import serves a user.
"""

from __future__ import annotations

from converters.lazy import lazy_exports

_LAZY = {
    "FastAPLoss": "reproduce.loss.fastap_loss",
    "fastap_loss": "reproduce.loss.fastap_loss",
    "recall_at_k": "reproduce.evaluation.recall",
    "evaluate": "reproduce.evaluation.evaluate",
    "load_dataset": "reproduce.evaluation.datasets",
    "run_parity": "reproduce.parity.run",
    "load_model": "converters.fastap.model_file",
    "load_mat": "converters.matio.read",
    "read_network": "converters.mcn.reader",
    "parse_diaries": "logs.diary_parser",
    "FastAPReproError": "converters.errors",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports("reproduce", _LAZY)
