"""A SMALL LOCAL training run for the main job: a generated dataset in the Stanford Online
Products layout (classes inside meta-classes), a randomly initialised ResNet-18 and a few
epochs of the authors' training at 32 px on the CPU, finishing in about a minute.

It shows the whole path on real numbers made here (sampler, step, diaries, checkpoints,
export, conversion, evaluation); it is NOT the paper's experiment and must never be reported
as such: the prefix of its folder (:data:`SMALL_RUN_PREFIX`) says so, and the main job labels
every output made from it.

The dataset (:func:`write_small_products`): ``Ebay_train.txt``/``Ebay_test.txt`` and
``<meta>_final/<class>_<k>.JPG``; each meta-class has its own texture (stripes of one
orientation), each class its own colour inside it, each image its own noise, so the classes
of one meta-class are alike (the authors' sampler pairs meta-classes, FastAP then ranks the
classes apart). Training and test classes are disjoint, as in SOP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from reproduce.evaluation.datasets import load_dataset
from reproduce.training.experiment import TrainOptions, experiment_dir, prepare_experiment
from reproduce.training.model import build_training_model
from reproduce.training.run import TrainResult, TrainSetup, run_training

SMALL_RUN_PREFIX = "small-local-run"
META_NAMES = ("bicycle", "chair", "lamp")
TRAIN_CLASSES, TEST_CLASSES, PER_CLASS, SIDE = 4, 3, 5, 32
SEED = 7


def _image(meta: int, cls: int, rng: np.random.Generator) -> np.ndarray:
    """A SIDE x SIDE RGB image: the meta-class's stripes in the class's colour, plus noise."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    angle = np.pi * meta / len(META_NAMES)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.7) > 0
    hue = np.array([128 + 60 * np.cos(0.9 * cls), 128 + 60 * np.sin(1.3 * cls),
                    128 + 40 * np.cos(2.1 * cls)])
    image = np.where(stripes[..., None], hue, 255 - hue)
    image = image + rng.normal(0, 45, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_small_products(root: Path) -> Path:
    """The generated SOP-layout dataset under ``root`` (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    rows = {"train": ["image_id class_id super_class_id path"],
            "test": ["image_id class_id super_class_id path"]}
    image_id, cls = 1, 0
    for part, count in (("train", TRAIN_CLASSES), ("test", TEST_CLASSES)):
        for meta, name in enumerate(META_NAMES):
            for _ in range(count):
                cls += 1
                for k in range(PER_CLASS):
                    rel = f"{name}_final/{cls:03d}_{k}.JPG"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_image(meta, cls, rng)).save(root / rel, quality=90)
                    rows[part].append(f"{image_id} {cls} {meta + 1} {rel}")
                    image_id += 1
    for part in rows:
        (root / f"Ebay_{part}.txt").write_text("\n".join(rows[part]) + "\n")
    return root


def small_options() -> TrainOptions:
    """The run's options: the authors' defaults but M = 16, D = 32, 8 epochs, test every 2,
    32 px input, lr 1e-4 (a random start needs more than the authors' fine-tuning rate)."""
    return TrainOptions(dataset="products", dim=32, batchSize=16, epoch=8, testInterval=2,
                        batchesPerMetaPair=2, lr=1e-4, image_size=SIDE, prefix=SMALL_RUN_PREFIX,
                        device="cpu", workers=0, progress_seconds=0.0,
                        init="torchvision_weights:random resnet18 (seed 0)")


def run_small(folder: Path, *, progress: bool = False) -> tuple[TrainResult, Path]:
    """Generate the data under ``folder/data``, train under ``folder``; (result, data root).

    Starts from a randomly initialised torchvision ResNet-18 (seed 0): nothing is downloaded.
    """
    data = write_small_products(folder / "data")
    torch.manual_seed(0)
    weights = folder / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    opts = small_options()
    ds = load_dataset("products", data)
    exp = experiment_dir(folder, opts)
    prepare_experiment(exp, opts, resume=True)
    model, average = build_training_model("torchvision_weights", weights, opts.arch, opts.dim,
                                          opts.image_size)
    result = run_training(TrainSetup(opts, exp, ds, model, average, resume=False,
                                     progress=progress, compress_export=False))
    return result, data
