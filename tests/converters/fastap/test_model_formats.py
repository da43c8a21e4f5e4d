"""The converted model in both formats, and ``fastap convert``'s protection of its inputs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from converters.fastap.card import ModelCard
from converters.fastap.families import FAMILY_RESNET18_PT
from converters.fastap.model_file import load_model
from reproduce.cli.main import main
from tests import REALFILES


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, build: SimpleNamespace) -> Path:
    """``fastap convert`` of the synthetic ResNet-18 checkpoint (all three files)."""
    folder = tmp_path_factory.mktemp("converted")
    assert main(["convert", str(build.checkpoint(FAMILY_RESNET18_PT)), "-o",
                 str(folder / "model.pt"), "--out", str(folder / "out")]) == 0
    return folder


def test_convert_writes_pt_safetensors_and_card(converted: Path) -> None:
    names = sorted(p.name for p in converted.iterdir() if p.is_file())
    assert names == ["model.json", "model.pt", "model.safetensors"]
    card = ModelCard.from_json((converted / "model.json").read_text())
    assert card.family == FAMILY_RESNET18_PT and card.embedding_dim == 512 and card.epoch == 3
    assert card.meta()["min_size"] == (224, 224)
    assert card.meta()["transforms"]["interpolation"] == "bicubic"
    with safe_open(str(converted / "model.safetensors"), framework="pt") as handle:
        # any safetensors reader sees plain tensor names and the card as metadata
        assert "state_dict.fc.weight" in set(handle.keys())
        assert json.loads(handle.metadata()["card_json"])["family"] == FAMILY_RESNET18_PT


def test_both_formats_load_the_same_model(converted: Path) -> None:
    pt_model, pt_card = load_model(converted / "model.pt")
    st_model, st_card = load_model(converted / "model.safetensors")
    assert pt_card.to_dict() == st_card.to_dict()
    assert pt_card.input.average_image.tolist() == st_card.input.average_image.tolist()
    for (name, a), (_, b) in zip(pt_model.state_dict().items(), st_model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        assert torch.equal(pt_model(x), st_model(x))


def test_generic_network_in_safetensors(tmp_path: Path) -> None:
    source = REALFILES / "mat" / "dagnn_v5_struct_mnist_new_net.mat"
    assert main(["convert", str(source), "-o", str(tmp_path / "m.safetensors"),
                 "--out", str(tmp_path / "out")]) == 0
    model, card = load_model(tmp_path / "m.safetensors")
    reference, _ = load_model(tmp_path / "m.pt")
    assert card.family == "generic"
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_outputs_get_the_usual_permissions(converted: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("model.pt", "model.safetensors", "model.json", "out/convert/card.json"):
        mode = stat.S_IMODE((converted / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))


def test_convert_refuses_to_overwrite_its_input(tmp_path: Path, build: SimpleNamespace,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "self.mat"
    ckpt.write_bytes(build.checkpoint(FAMILY_RESNET18_PT).read_bytes())
    before = ckpt.read_bytes()
    assert main(["convert", str(ckpt), "-o", str(tmp_path / "self.pt"), "--out",
                 str(tmp_path / "out")]) == 0
    capsys.readouterr()
    # -o naming the checkpoint itself (through another spelling) is refused
    status = main(["convert", str(ckpt), "-o", str(tmp_path / "." / "self.mat"), "--force"])
    assert status == 2 and "self.mat" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


def test_existing_output_needs_force(converted: Path, build: SimpleNamespace, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"keep me")
    args = ["convert", str(build.checkpoint(FAMILY_RESNET18_PT)), "-o", str(target),
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert main([*args, "--force"]) == 0
    assert load_model(target)[1].family == FAMILY_RESNET18_PT


def test_out_that_is_a_file_leaves_nothing_behind(tmp_path: Path, build: SimpleNamespace,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "FILE"
    blocker.write_text("not a folder")
    status = main(["convert", str(build.checkpoint(FAMILY_RESNET18_PT)), "-o",
                   str(tmp_path / "ok.pt"), "--out", str(blocker)])
    assert status == 2 and "--out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_evaluating_a_matconvnet_checkpoint_says_to_convert(tmp_path: Path,
                                                           build: SimpleNamespace,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    build.products(tmp_path / "sop", classes=2, per_class=2)
    status = main(["evaluate", "--model", str(build.checkpoint(FAMILY_RESNET18_PT)),
                   "--dataset", "products", "--root", str(tmp_path / "sop"),
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "MatConvNet checkpoint" in err and "fastap convert" in err
    assert "weights_only" not in err and len(err.strip().splitlines()) == 1


def test_card_carries_the_published_metrics_of_its_configuration(converted: Path) -> None:
    import pandas as pd

    from reproduce import paths

    card = ModelCard.from_json((converted / "model.json").read_text())
    # the synthetic checkpoint's options: products, resnet18, batchSize 256, dim 512
    assert card.metrics["released"] == "products-resnet18-M256-D512"
    pub = pd.read_csv(paths.PUBLISHED_DIR / "published_results.csv")
    rows = pub[(pub.method == "FastAP") & (pub.dataset == "products")
               & (pub.backbone == "ResNet-18") & (pub.batch_size == 256) & (pub.dim == 512)]
    assert set(card.metrics["published"]) == set(rows.metric)
    for _, row in rows.iterrows():
        entry = card.metrics["published"][row.metric]
        assert entry["status"] == row.status
        assert (entry["value"] is None) == pd.isna(row.value)
        if entry["value"] is not None:
            assert entry["value"] == row.value
    assert card.meta()["metrics"] == card.metrics
