"""Inputs of the ``fastap train`` tests: a tiny SOP-layout dataset with two meta-classes and
a random torchvision ResNet-18 state_dict, built once per session into a temporary folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision

from tests.conftest import write_products


def write_tiny_products(root: Path) -> Path:
    """SOP layout: 4 training classes over 2 meta-classes, 3 test classes, 4 images each."""
    return write_products(root, classes=3, per_class=4, train_classes=4)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """``root`` (dataset), ``weights`` (torchvision resnet18 state_dict) and ``args(out,
    *extra)``: the ``fastap train`` arguments of a tiny CPU run (32 px, M = 8, D = 16)."""
    base = tmp_path_factory.mktemp("train_tiny")
    root = write_tiny_products(base / "sop")
    torch.manual_seed(0)
    weights = base / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)

    def args(out: Path, *extra: str) -> list[str]:
        return ["-q", "train", "--dataset", "products", "--root", str(root),
                "--torchvision-weights", str(weights), "--batch-size", "8", "--dim", "16",
                "--image-size", "32", "--device", "cpu", "--workers", "0",
                "--progress-seconds", "0", "--out", str(out), *extra]

    return SimpleNamespace(root=root, weights=weights, args=args)
