"""The model card of a converted network: where its weights came from, what it is and expects.

A :class:`ModelCard` is written by conversion, stored inside every model file (``.pt`` and
``.safetensors``) and beside it as JSON, and read by ``load_model``, evaluation and the
tables. Its fields follow what torchvision's ``Weights.meta`` carries for a pretrained
model (source, architecture, input size, the exact preprocessing, metrics), plus what a
MatConvNet checkpoint adds: the source file's sha256, the model family, the epoch and the
options of the run that trained it.

The mean image is the one array a card holds (``ModelInput.average_image``); in JSON it is a
list for a per-channel mean, and ``"stored"`` (with its shape) for a full mean image, which
the model file keeps as a tensor beside the weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.errors import MatConvNetError

#: Version of the card's JSON layout (1: the untyped dict of the first release).
CARD_FORMAT_VERSION = 2
#: Versions ``ModelCard.from_dict`` reads (version 1 cards have the same keys).
READABLE_VERSIONS = (1, 2)
#: The family name of networks converted by the generic MatConvNet graph module.
FAMILY_GENERIC = "generic"
#: JSON value standing for a full mean image kept beside the weights.
STORED = "stored"


@dataclass
class ModelInput:
    """What ``model(x)`` expects: layout, channels, scale, size and the mean subtracted."""

    layout: str = "NCHW"
    var: str | None = None
    channels: str | None = None
    scale: str | None = None
    size: list[int] | None = None
    dtype: str | None = None
    mean_subtracted: bool | None = None
    average_image: np.ndarray | None = None
    average_image_scale: str | None = None
    average_image_shape: list[int] | None = None
    image_std_stored: list[float] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; the mean image as a list (3 values) or ``"stored"``."""
        data = dataclasses.asdict(self)
        average = self.average_image
        if average is not None:
            array = np.asarray(average, dtype=np.float32)
            data["average_image"] = array.ravel().tolist() if array.size == 3 else STORED
            data["average_image_shape"] = list(array.shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInput:
        """The inverse of :meth:`to_dict` (a ``"stored"`` mean image is filled in later)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        average = values.get("average_image")
        if isinstance(average, list):
            values["average_image"] = np.asarray(average, dtype=np.float32)
        elif average is not None:
            values["average_image"] = None  # "stored": the model file supplies the array
        return cls(**values)


@dataclass
class ModelCard:
    """Everything known about one converted model (see the module docstring)."""

    family: str
    source_file: str | None = None
    source_name: str = ""
    source_sha256: str | None = None
    source_format: str | None = None
    arch: str | None = None
    embedding_dim: int | None = None
    epoch: int | None = None
    epoch_from: str | None = None
    #: The options of the run, as the checkpoint's ``FastAP`` loss layer stores them.
    opts: dict[str, Any] | None = None
    #: MatConvNet var names of the outputs (FastAP) or the input/output var lists (generic).
    outputs: dict[str, Any] = field(default_factory=dict)
    input: ModelInput = field(default_factory=ModelInput)
    #: The preprocessing descriptions by name, and which one is the ``default``.
    preprocessing: dict[str, Any] | None = None
    batchnorm: str | None = None
    #: The ``--check-input`` result: which input scaling fits the first BatchNorm's moments.
    input_scaling: dict[str, Any] | None = None
    #: Evaluated metrics when known, by dataset and protocol.
    metrics: dict[str, Any] | None = None
    #: Whether the source is a SYNTHETIC checkpoint (random weights written by this toolkit).
    synthetic: bool = False
    format_version: int = CARD_FORMAT_VERSION

    @property
    def is_fastap(self) -> bool:
        """Whether the model is a FastAP embedding (a torchvision ResNet), not a generic net."""
        return self.family != FAMILY_GENERIC

    @property
    def dataset(self) -> str | None:
        """The dataset the checkpoint was trained on, from its options (``opts.dataset``)."""
        value = (self.opts or {}).get("dataset")
        return str(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able data (``format_version`` is always the current one)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["input"] = self.input.to_dict()
        data["format_version"] = CARD_FORMAT_VERSION
        return json.loads(json.dumps(data, default=_jsonable))

    def to_json(self) -> str:
        """The card as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        """A card from :meth:`to_dict`'s data; ``source`` names the file in errors."""
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise MatConvNetError(f"{source}: model card format {version!r}, this reader "
                                  f"knows {list(READABLE_VERSIONS)}")
        if "family" not in data:
            raise MatConvNetError(f"{source}: model card without a family")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["input"] = ModelInput.from_dict(data.get("input") or {})
        values["format_version"] = CARD_FORMAT_VERSION
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        """A card from its JSON text; damaged JSON is an error naming ``source``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MatConvNetError(f"{source}: model card is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise MatConvNetError(f"{source}: model card is not a JSON object")
        return cls.from_dict(data, source)

    def summary(self) -> dict[str, Any]:
        """The card for printing: the full mean image reduced to its shape."""
        data = self.to_dict()
        if data["input"].get("average_image") == STORED:
            data["input"]["average_image"] = (
                f"stored in the model file, shape {data['input']['average_image_shape']}")
        return data

    def meta(self) -> dict[str, Any]:
        """The card as torchvision's ``Weights.meta`` would carry it (flat, descriptive)."""
        named = self.preprocessing or {}
        return {
            "source": self.source_name, "source_sha256": self.source_sha256,
            "family": self.family, "arch": self.arch, "embedding_dim": self.embedding_dim,
            "min_size": tuple(self.input.size) if self.input.size else None,
            "epoch": self.epoch, "matlab_opts": self.opts,
            "transforms": named.get(named.get("default") or "", None),
            "preprocessing": named.get("default"), "input_scaling": self.input_scaling,
            "metrics": self.metrics,
        }


def _jsonable(value: Any) -> Any:
    """numpy values and paths inside a card as plain JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable in a model card: {type(value).__name__}")
