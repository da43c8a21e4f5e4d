"""``fastap convert`` and ``fastap verify``: results, exit statuses, and clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import converters.fastap.verify as verify_module
from converters.fastap.families import FAMILY_RESNET18_PT
from converters.fastap.model_file import load_model
from converters.fastap.synthetic import checkpoint_tree, write_synthetic_checkpoint
from converters.matio.write import save_mat
from converters.mcn.net import McnNet
from converters.mcn.reader import read_network
from reproduce.cli.main import main
from tests import REALFILES

REAL = REALFILES / "mat"


def test_convert_writes_model_and_card(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       build: SimpleNamespace) -> None:
    ckpt = build.checkpoint(FAMILY_RESNET18_PT)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
            images / f"im{i}.png")
    out_pt = tmp_path / "model.pt"
    status = main(["convert", str(ckpt), "-o", str(out_pt), "--check-input", str(images),
                   "--out", str(tmp_path / "out")])
    assert status == 0
    printed = capsys.readouterr().out
    assert "resnet18-pt-mcn" in printed and "input scaling" in printed
    model, card = load_model(out_pt)
    assert card.family == FAMILY_RESNET18_PT and card.epoch == 3
    scaling = card.input_scaling
    assert scaling["bn_layer"] == "features_1" and scaling["num_images"] == 3
    assert set(scaling["candidates"]) == {"matlab", "matlab_mean_x255", "torchvision"}
    assert scaling["best"] in scaling["candidates"]
    card_json = json.loads((tmp_path / "out" / "convert" / "card.json").read_text())
    assert card_json["input"]["average_image"] == pytest.approx([0.485, 0.456, 0.406])
    assert (tmp_path / "out" / "convert" / "run_info.json").exists()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 512)


def test_verify_passes_for_a_fastap_checkpoint(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               build: SimpleNamespace) -> None:
    ckpt = build.checkpoint(FAMILY_RESNET18_PT)
    out = tmp_path / "out"
    assert main(["verify", str(ckpt), "--batch", "1", "--out", str(out)]) == 0
    assert "OK: within tolerance" in capsys.readouterr().out
    table = (out / "verify" / "comparison.csv").read_text()
    assert "feats_l2" in table and "classifier_flatten" in table


def test_verify_passes_for_a_real_generic_network(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["verify", str(REAL / "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat"),
                   "--batch", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "OK: within tolerance" in printed


def test_verify_takes_a_given_input(tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((28, 28, 1, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    comparisons, ok = verify_module.verify(REAL / "dagnn_v5_struct_mnist_new_net.mat",
                                            tmp_path / "x.npy")
    assert ok
    assert comparisons and comparisons[0].shape[0] == 2  # the batch of the given input
    comparisons64, ok64 = verify_module.verify(REAL / "dagnn_v5_struct_mnist_new_net.mat",
                                                tmp_path / "x.npy", dtype="float64")
    assert ok64
    assert max(c.rel_l2 for c in comparisons64) < 1e-10


@pytest.mark.parametrize("array,needle", [
    (np.array([["a", "b"], ["c", "d"]]), "holds <U1 values, not numbers"),
    (np.zeros((28, 28, 3, 2), np.float32), "has 3 channels (shape [28, 28, 3, 2]"),
    (np.zeros((28, 28), np.float32), "expected H x W x C or H x W x C x N"),
    (np.full((28, 28, 1, 1), np.nan, np.float32), "NaN or Inf"),
])
def test_verify_names_a_wrong_input_array(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          array: np.ndarray, needle: str) -> None:
    np.save(tmp_path / "x.npy", array)
    status = main(["verify", str(REAL / "dagnn_v5_struct_mnist_new_net.mat"), "--input",
                   str(tmp_path / "x.npy"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "x.npy" in err and needle in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'"])
def test_verify_names_an_empty_or_cut_input_file(tmp_path: Path, content: bytes,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.npy"
    bad.write_bytes(content)
    _expect_error(["verify", str(REAL / "dagnn_v5_struct_mnist_new_net.mat"), "--input",
                   str(bad), "--out", str(tmp_path / "out")], capsys, "x.npy",
                  "not a .npy/.npz array file")


def test_verify_exits_1_beyond_tolerance(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         build: SimpleNamespace) -> None:
    ckpt = build.checkpoint(FAMILY_RESNET18_PT)
    real_convert = verify_module.convert_network

    def convert_with_a_flaw(net: McnNet, **kwargs: Any) -> tuple[torch.nn.Module, dict]:
        model, card = real_convert(net, **kwargs)
        with torch.no_grad():
            model.base.layer3[1].bn2.bias[7] += 0.5  # one channel off in one layer
        return model, card

    monkeypatch.setattr(verify_module, "convert_network", convert_with_a_flaw)
    assert main(["verify", str(ckpt), "--batch", "1", "--out", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out


def _expect_error(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("command", ["convert", "verify"])
def test_bad_files_exit_2_with_a_clear_message(command: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["-o", str(tmp_path / "m.pt")] if command == "convert" else []
    extra += ["--out", str(tmp_path / "out")]
    text = tmp_path / "notes.mat"
    text.write_text("these are my notes, not a MAT file\n" * 20)
    _expect_error([command, str(text), *extra], capsys, f"fastap {command}: error:",
                  "notes.mat", "not a MATLAB .mat file")
    truncated = tmp_path / "truncated.mat"
    data = (REAL / "dagnn_v5_struct_mnist_new_net.mat").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _expect_error([command, str(truncated), *extra], capsys, "truncated.mat")
    no_net = tmp_path / "no_net.mat"
    save_mat(no_net, {"x": np.ones((2, 2))})
    _expect_error([command, str(no_net), *extra], capsys, "no_net.mat",
                  "holds no MatConvNet network")
    _expect_error([command, str(tmp_path / "absent.mat"), *extra], capsys, "absent.mat")
    assert not (tmp_path / "m.pt").exists()


def _write_edited_checkpoint(path: Path, edit: Callable[[dict], None]) -> Path:
    tree = checkpoint_tree(FAMILY_RESNET18_PT, with_state=False)
    edit(tree["net"])
    return save_mat(path, tree, compress=False)


def test_bad_checkpoints_exit_2_naming_the_fault(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def add_unknown_layer(net: dict) -> None:
        net["layers"].insert(4, {"name": "odd_layer", "type": "dagnn.Strange",
                                 "inputs": ["features_3"], "outputs": ["odd"], "params": [],
                                 "block": {}})
        net["vars"].append({"name": "odd", "precious": False})

    def reshape_param(net: dict) -> None:
        param = next(p for p in net["params"] if p["name"] == "features_4_1_conv2_filter")
        param["value"] = param["value"][:, :, :32, :]

    unknown = _write_edited_checkpoint(tmp_path / "unknown.mat", add_unknown_layer)
    _expect_error(["convert", str(unknown), "-o", str(tmp_path / "a.pt"), "--out",
                   str(tmp_path)], capsys, "unknown.mat", "odd_layer", "dagnn.Strange")
    wrong = _write_edited_checkpoint(tmp_path / "wrong.mat", reshape_param)
    _expect_error(["convert", str(wrong), "-o", str(tmp_path / "b.pt"), "--out",
                   str(tmp_path)], capsys, "wrong.mat", "features_4_1_conv2_filter",
                  "3x3x32x64", "3x3x64x64")
    _expect_error(["verify", str(wrong), "--out", str(tmp_path)], capsys,
                  "features_4_1_conv2_filter")
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_checkpoint_with_adam_state_reads_and_converts(tmp_path: Path) -> None:
    path = write_synthetic_checkpoint(tmp_path / "net-epoch-2.mat", FAMILY_RESNET18_PT,
                                      dim=64, epoch=2, with_state=True, compress=False)
    with_state = read_network(path, with_state=True)
    solver = with_state.state["solverState"]
    assert len(solver) == len(with_state.params)
    first = next(iter(with_state.params.values()))
    assert solver[0]["m"].shape == first.value.shape and solver[0]["m"].dtype == np.float32
    assert float(np.asarray(solver[0]["t"]).ravel()[0]) == 2 * 233
    assert len(with_state.stats["train"]) == 2
    assert read_network(path).state is None  # not read unless asked
    assert main(["convert", str(path), "-o", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path)]) == 0
    _model, card = load_model(tmp_path / "m.pt")
    assert card.embedding_dim == 64 and card.epoch == 2


def test_copied_checkpoint_keeps_its_epoch_from_stats(tmp_path: Path,
                                                      build: SimpleNamespace) -> None:
    ckpt = build.checkpoint(FAMILY_RESNET18_PT)
    renamed = tmp_path / "fastap_sop.mat"
    shutil.copy(ckpt, renamed)
    assert main(["convert", str(renamed), "-o", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path)]) == 0
    _model, card = load_model(tmp_path / "m.pt")
    assert card.epoch == 3 and card.epoch_from.startswith("stats.train")
