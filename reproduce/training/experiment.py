"""The options of a ``fastap train`` run (the authors' ``get_opts`` defaults) and its folder.

:class:`TrainOptions` holds every option with the defaults of ``get_opts.m``/``run_demo.m``
(MATLAB names where the option mirrors one: ``batchSize``, ``testInterval``, ``maxGpuImgs``,
``batchesPerMetaPair``). :func:`experiment_dir` names the folder as ``get_opts`` does,
``<out>/train/<dataset>-FastAP-<dim>-<arch>/<prefix>-<nbins>bins-batch<M>-<solver><lr>mult
<lrmult>-WD<wd>``. :func:`prepare_experiment` creates it, writes ``options.json`` and refuses
an existing folder whose options differ (or one holding checkpoints without ``--continue``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from reproduce.errors import InputError
from reproduce.outputs import write_json

OPTIONS_FILE = "options.json"
#: ``maxGpuImgs`` per architecture (``+models/*.m``).
MAX_GPU_IMGS = {"resnet18": 256, "resnet50": 90}
#: ``batchesPerMetaPair`` per dataset (``run_demo.m``); others take the SOP value.
BATCHES_PER_META_PAIR = {"products": 5, "inshop": 2}
#: Recall@K of each dataset (``run_demo.m`` ``opts.Ks``) come from the dataset's protocol.
STEPS = ("matlab", "accumulate")
SAMPLERS = ("authors", "class-balanced")
DEFAULT_PREFIX = "fastap"
#: Options that may change between a run and its continuation (not part of what was trained).
RUNTIME_OPTIONS = ("epoch", "device", "workers", "progress_seconds")


@dataclass
class TrainOptions:
    """Everything that defines a training run; defaults as ``get_opts.m`` (TRAINING section 1).

    ``step``: ``matlab`` (``train``/``train_staged`` by the authors' ``M <= maxGpuImgs`` rule)
    or ``accumulate`` (ours); ``sampler``: ``authors`` (``train_hard``, ``train_hard_vid`` for
    VehicleID) or ``class-balanced`` (ours, for datasets without meta-classes);
    ``image_size`` (ours, 224 as the authors): the side of the training and test input.
    """

    dataset: str
    arch: str = "resnet18"
    dim: int = 512
    nbins: int = 10
    solver: str = "adam"
    batchSize: int = 256  # noqa: N815 (MATLAB name)
    lr: float = 1e-5
    lrmult: float = 10.0
    wdecay: float = 0.0
    epoch: int = 30
    testInterval: int = 3  # noqa: N815
    randseed: int = 42
    maxGpuImgs: int | None = None  # noqa: N815
    batchesPerMetaPair: int | None = None  # noqa: N815
    step: str = "matlab"
    sampler: str = "authors"
    image_size: int = 224
    prefix: str = DEFAULT_PREFIX
    init: str = ""
    device: str = "cpu"
    workers: int = 2
    progress_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.maxGpuImgs is None:
            self.maxGpuImgs = MAX_GPU_IMGS.get(self.arch, 256)
        if self.batchesPerMetaPair is None:
            self.batchesPerMetaPair = BATCHES_PER_META_PAIR.get(self.dataset, 5)
        self.validate()

    def validate(self) -> None:
        """Each bad option is an ``InputError`` naming it."""
        checks = [
            (self.batchSize >= 2 and self.batchSize % 2 == 0,
             f"--batch-size {self.batchSize}: M must be an even number >= 2 (each batch is "
             "M/2 images from each of two meta-classes)"),
            (self.maxGpuImgs >= 1, f"--max-gpu-imgs {self.maxGpuImgs}: must be >= 1"),
            (self.batchesPerMetaPair >= 1,
             f"--batches-per-meta-pair {self.batchesPerMetaPair}: must be >= 1"),
            (self.dim >= 1, f"--dim {self.dim}: must be >= 1"),
            (self.nbins >= 2, f"--nbins {self.nbins}: must be >= 2"),
            (self.lr > 0, f"--lr {self.lr}: must be positive"),
            (self.lrmult > 0, f"--lrmult {self.lrmult}: must be positive"),
            (self.wdecay >= 0, f"--wdecay {self.wdecay}: must be >= 0"),
            (self.epoch >= 1, f"--epochs {self.epoch}: must be >= 1"),
            (self.testInterval >= 1, f"--test-interval {self.testInterval}: must be >= 1"),
            (self.step in STEPS, f"--step {self.step}: choose one of {list(STEPS)}"),
            (self.sampler in SAMPLERS, f"--sampler {self.sampler}: choose one of "
                                       f"{list(SAMPLERS)}"),
            (self.image_size >= 16, f"--image-size {self.image_size}: must be >= 16"),
            (self.workers >= 0, f"--workers {self.workers}: must be >= 0"),
            (self.solver == "adam", f"solver {self.solver!r}: only adam is implemented"),
            (bool(self.prefix) and "/" not in self.prefix,
             f"--prefix {self.prefix!r}: must be a non-empty name without '/'"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def expID(self) -> str:  # noqa: N802 (MATLAB name)
        """``<dataset>-FastAP-<dim>-<arch>`` (``get_opts.m`` line 52)."""
        return f"{self.dataset}-FastAP-{self.dim}-{self.arch}"

    @property
    def identifier(self) -> str:
        """``<prefix>-`` + ``sprintf('%dbins-batch%d-%s%.emult%g', ...)`` + ``'-WD%.e'``."""
        return (f"{self.prefix}-{self.nbins:d}bins-batch{self.batchSize:d}-{self.solver}"
                f"{self.lr:.0e}mult{self.lrmult:g}-WD{self.wdecay:.0e}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``options.json`` and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> TrainOptions:
        """The options stored in ``where`` (a clear error when they are not options)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or "dataset" not in data or set(data) - names:
            raise InputError(f"{where}: not the options of a fastap train run")
        return cls(**data)


def experiment_dir(out: str | Path, opts: TrainOptions) -> Path:
    """``<out>/train/<expID>/<identifier>``, the authors' ``opts.expDir`` under ``--out``."""
    return Path(out) / "train" / opts.expID / opts.identifier


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for every option that differs (runtime options aside)."""
    keys = sorted((set(old) | set(new)) - set(RUNTIME_OPTIONS))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_experiment(folder: Path, opts: TrainOptions, *, resume: bool) -> None:
    """Create ``folder`` with ``options.json``; an existing one must hold the same options
    (``RUNTIME_OPTIONS`` aside) and, if it has checkpoints, be resumed (``--continue``)."""
    options_file = folder / OPTIONS_FILE
    if options_file.is_file():
        try:
            old = json.loads(options_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{options_file}: unreadable options ({exc}); delete the "
                             "experiment folder or choose another --out") from exc
        diff = _differences(old, opts.to_dict())
        if diff:
            raise InputError(f"{folder}: an experiment with other options exists here "
                             f"({'; '.join(diff)}); choose another --out or --prefix")
        if not resume and any(folder.glob("checkpoint-epoch-*.pt")):
            raise InputError(f"{folder}: holds checkpoints of this experiment; pass --continue "
                             "to resume it, or choose another --out or --prefix")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(options_file, opts.to_dict())
