"""One entry point from a MatConvNet network to a PyTorch module and its model card.

``convert_network(net)``: a FastAP checkpoint (a ``FastAP`` loss layer, or the ``fc`` +
``L2norm`` head) becomes a torchvision ResNet embedding model
(:mod:`converters.fastap.families`); any other network becomes the generic graph module
(:class:`converters.mcn.to_torch.McnModule`). The card records where the weights came from, what
the network is, and the input it expects: the MATLAB input of docs/pipeline.md section 4
and the torchvision alternative, both stated, neither guessed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.atomic_file import atomic_path
from converters.errors import MatConvNetError
from converters.fastap.card import FAMILY_GENERIC, ModelCard, ModelInput
from converters.fastap.families import (
    ARCH,
    INPUT_SIZE,
    FastAPEmbedding,
    convert_fastap,
    detect_family,
    is_fastap_network,
)
from converters.fastap.input_scaling import check_input_scaling, read_images
from converters.fastap.model_file import SAFETENSORS_SUFFIX, save_model
from converters.fastap.run_options import checkpoint_epoch, loss_options
from converters.fastap.synthetic import SYNTHETIC_META
from converters.mcn.net import McnNet
from converters.mcn.reader import read_network
from converters.mcn.to_torch import McnModule

log = logging.getLogger(__name__)

TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

# docs/pipeline.md section 4 (UNCONFIRMED there: batch_imagenet.m is not in the FastAP repo)
MATLAB_PREPROCESSING: dict[str, Any] = {
    "source": "docs/pipeline.md section 4 (batch_imagenet.m of the authors' MIHash code; "
              "UNCONFIRMED for FastAP)",
    "dataset_preresize": "SOP and VehicleID images imresize(im, [256 256]) (bicubic, "
                         "antialiased, aspect ratio not kept), re-saved by imwrite as JPEG "
                         "quality 75; In-Shop images used as they are",
    "read": "vl_imreadjpeg(files, 'Resize', [224 224], 'Interpolation', 'bicubic', "
            "'SubtractAverage', averageImage)",
    "resize": [224, 224],
    "interpolation": "bicubic",
    "crop": None,
    "channels": "RGB",
    "scale": "0-255",
    "subtract": "meta.normalization.averageImage as stored",
    "divide_by_std": False,
    "dtype": "single",
}


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 of a file's bytes (None when ``path`` is not a file)."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def average_image(net: McnNet) -> np.ndarray | None:
    """``meta.normalization.averageImage``: (3,) for a per-channel mean, else H x W x 3."""
    norm = (net.meta or {}).get("normalization")
    if not isinstance(norm, dict) or "averageImage" not in norm:
        return None
    image = np.asarray(norm["averageImage"], dtype=np.float32)
    if image.size == 0:
        return None
    return image.reshape(3) if image.size == 3 else image


def _image_std(net: McnNet) -> list[float] | None:
    """``meta.normalization.imageStd`` when stored (pt-mcn models carry it; MATLAB ignores it)."""
    norm = (net.meta or {}).get("normalization")
    if isinstance(norm, dict) and "imageStd" in norm:
        return [float(v) for v in np.asarray(norm["imageStd"], dtype=np.float64).ravel()]
    return None


def _input_section(net: McnNet) -> ModelInput:
    """What ``model(x)`` expects, in words and numbers."""
    average = average_image(net)
    return ModelInput(
        var="data", layout="NCHW", channels="RGB", scale="0-255", size=list(INPUT_SIZE),
        dtype="float32", mean_subtracted=True, average_image=average,
        average_image_scale=None if average is None else
        ("0-1" if float(np.max(np.abs(average))) <= 1.0 else "0-255"),
        image_std_stored=_image_std(net),
        note="x = MATLAB's `data` (H x W x 3 x N, RGB, 0-255, averageImage subtracted) "
             "permuted to N x 3 x H x W")


def _preprocessing() -> dict[str, Any]:
    """The MATLAB preprocessing (section 4) and the torchvision alternative, both stated."""
    return {
        "matlab": dict(MATLAB_PREPROCESSING),
        "torchvision": {
            "resize": [224, 224], "channels": "RGB", "scale": "0-1",
            "mean": list(TORCHVISION_MEAN), "std": list(TORCHVISION_STD),
            "formula": "x = (pixels / 255 - mean) / std",
            "note": "what torchvision ResNets expect; NOT the input these MatConvNet weights "
                    "saw under the section-4 pipeline (see input_scaling when checked)",
        },
        "default": "matlab",
    }


def _source_fields(net: McnNet) -> dict[str, Any]:
    """The card fields every converted network shares: its file, hash, format and epoch."""
    epoch, epoch_from = checkpoint_epoch(net)
    return {"source_file": net.source, "source_name": os.path.basename(net.source or ""),
            "source_sha256": file_sha256(net.source), "source_format": net.format,
            "epoch": epoch, "epoch_from": epoch_from,
            "synthetic": SYNTHETIC_META in (net.meta or {})}


def fastap_card(net: McnNet, model: FastAPEmbedding) -> ModelCard:
    """The model card of a converted FastAP checkpoint."""
    return ModelCard(
        family=model.family, arch=ARCH[model.family], embedding_dim=model.embedding_dim,
        opts=loss_options(net), outputs=dict(model.var_names), input=_input_section(net),
        preprocessing=_preprocessing(),
        batchnorm="folded exactly: weight = mult / sigma, running_mean = mu, "
                  "running_var = 1, eps = 0 (inference only)",
        **_source_fields(net))


def generic_card(net: McnNet, module: McnModule) -> ModelCard:
    """The model card of a network converted by the generic graph module."""
    return ModelCard(
        family=FAMILY_GENERIC,
        outputs={"inputs": list(module.input_names), "outputs": list(module.output_names)},
        input=ModelInput(average_image=average_image(net),
                         note="inputs are the network's input vars permuted from MATLAB's "
                              "H x W x C x N to N x C x H x W"),
        **_source_fields(net))


def convert_network(net: McnNet, *, dtype: torch.dtype = torch.float32
                    ) -> tuple[nn.Module, ModelCard]:
    """``(module, card)`` for ``net``: FastAP checkpoints -> torchvision ResNet, else generic.

    Raises MatConvNetError naming the layer/param at fault when the network cannot be
    converted.
    """
    if is_fastap_network(net):
        family = detect_family(net)
        model = convert_fastap(net, family, dtype=dtype)
        return model, fastap_card(net, model)
    module = McnModule(net, dtype=dtype)
    module.mcn_net = net  # kept for save_model, which stores the graph beside the weights
    module.eval()
    return module, generic_card(net, module)


def model_files(output: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """The files ``fastap convert -o OUTPUT`` writes: ``.pt``, ``.safetensors`` and card ``.json``.

    ``OUTPUT`` names either model file; the other two share its stem.
    """
    path = Path(output)
    if path.suffix not in (".pt", SAFETENSORS_SUFFIX):
        raise MatConvNetError(f"-o {output}: name a .pt or .safetensors model file")
    return path.with_suffix(".pt"), path.with_suffix(SAFETENSORS_SUFFIX), path.with_suffix(".json")


def convert_file(ckpt: str | os.PathLike[str], output: str | os.PathLike[str],
                 check_input: str | os.PathLike[str] | None = None, *,
                 max_images: int = 64,
                 annotate: Callable[[ModelCard], None] | None = None) -> ModelCard:
    """Convert ``ckpt`` and write the model files of :func:`model_files`; return the card.

    With ``check_input`` (a folder of images), the card's ``input_scaling`` records which
    input scaling fits the checkpoint's first BatchNorm moments; ``annotate`` may add to the
    card before it is written (the CLI adds the published metrics). Either every file is
    written or, on any failure, none of them is left behind.
    """
    files = model_files(output)
    net = read_network(ckpt)
    model, card = convert_network(net)
    if check_input is not None:
        images = read_images(check_input, limit=max_images)
        card.input_scaling = check_input_scaling(net, images,
                                                 average_image=card.input.average_image)
    if annotate is not None:
        annotate(card)
    written: list[Path] = []
    try:
        for path in files[:2]:
            written.append(save_model(path, model, card))
        with atomic_path(files[2]) as tmp:
            tmp.write_text(card.to_json(), encoding="utf-8")
        written.append(files[2])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return card
