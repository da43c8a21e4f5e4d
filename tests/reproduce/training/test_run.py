"""A tiny training run end to end: diaries read back by the parser with every logged
number, the MatConvNet export through ``fastap convert``/``verify``, Ctrl-C, bad input."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from logs.diary_parser import parse_diaries
from reproduce.cli.main import main
from reproduce.errors import InputError
from reproduce.evaluation.datasets import load_dataset
from reproduce.training import checkpoint as checkpoint_module
from reproduce.training.checkpoint import load_checkpoint, save_checkpoint
from reproduce.training.experiment import TrainOptions, experiment_dir, prepare_experiment
from reproduce.training.model import build_training_model
from reproduce.training.run import TrainSetup, make_step, run_training


def _setup(tiny: SimpleNamespace, out: Path, step_factory=make_step, **options) -> TrainSetup:
    opts = TrainOptions(dataset="products", dim=16, batchSize=8, image_size=32, device="cpu",
                        workers=0, progress_seconds=0.0,
                        init=f"torchvision_weights:{tiny.weights}", **options)
    ds = load_dataset("products", tiny.root)
    folder = experiment_dir(out, opts)
    prepare_experiment(folder, opts, resume=True)
    model, average = build_training_model("torchvision_weights", tiny.weights, "resnet18", 16,
                                          32)
    return TrainSetup(opts, folder, ds, model, average, progress=False,
                      step_factory=step_factory, compress_export=False)


@pytest.fixture(scope="module")
def trained(tiny: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
            ) -> SimpleNamespace:
    """Three epochs (2 batches each, checkpoint and evaluation at 2), every batch's
    objective recorded by a wrapper around the real step."""
    recorded: list[float] = []

    def recording(model, optimizer, opts):
        step = make_step(model, optimizer, opts)

        def call(images, labels):
            res = step(images, labels)
            recorded.append(res.objective)
            return res
        return call

    out = tmp_path_factory.mktemp("trained")
    setup = _setup(tiny, out, recording, epoch=3, testInterval=2, batchesPerMetaPair=2)
    result = run_training(setup)
    # batches come in epoch order, 2 per epoch: split the recorded list accordingly
    assert len(recorded) == 6
    per_epoch = {e: recorded[2 * (e - 1):2 * e] for e in (1, 2, 3)}
    return SimpleNamespace(result=result, folder=setup.folder, objectives=per_epoch,
                           setup=setup)


def test_diaries_give_back_every_logged_number(trained: SimpleNamespace) -> None:
    run = parse_diaries(trained.folder)
    assert not run.simulated
    assert run.unrecognised == []
    assert run.options["batchSize"] == 8 and run.options["dim"] == 16
    assert run.options["identifier"] == "fastap-10bins-batch8-adam1e-05mult10-WD0e+00"
    assert run.options["expID"] == "products-FastAP-16-resnet18"
    assert sorted(run.epochs) == [1, 2, 3]
    for epoch, objs in trained.objectives.items():
        record = run.epochs[epoch]
        assert len(objs) == 2 and record.meta_classes == 2 and record.batches_per_pair == 2
        assert record.train_objective == float(f"{np.mean(objs):g}")
        assert [p.batch for p in record.progress] == [1, 2]
        assert [p.objective for p in record.progress] == [float(f"{o:.3f}") for o in objs]
        assert [p.running_mean for p in record.progress] == [
            float(f"{np.mean(objs[:k]):.3f}") for k in (1, 2)]
        assert all(p.mode == "train" and p.batch_size == 8 for p in record.progress)
    assert run.epochs[2].checkpoint == str(trained.folder / "net-epoch-2.mat")
    assert run.epochs[1].checkpoint is None and run.epochs[3].checkpoint is None
    assert not run.epochs[3].evaluated
    for epoch in (1, 2):
        saved = json.loads((trained.folder / f"eval-epoch-{epoch}.json")
                                         .read_text())
        (protocol,) = saved["protocols"]
        assert protocol["Ks"] == [1, 10]  # 12 test images: K = 100, 1000 dropped
        assert run.epochs[epoch].recall == {f"R@{k}": float(f"{r:.3f}") for k, r in
                                            zip(protocol["Ks"], protocol["recall"],
                                                strict=True)}
        assert 0.0 <= protocol["map_at_r"] <= 1.0
    assert trained.result.objectives == {e: run.epochs[e].train_objective for e in (1, 2, 3)}


def test_objectives_are_mean_ap_of_batches(trained: SimpleNamespace) -> None:
    """FastAP's batch objective is a mean AP: in (0, 1], and not constant across batches."""
    flat = [o for objs in trained.objectives.values() for o in objs]
    assert all(0.0 < o <= 1.0 for o in flat) and len(set(flat)) > 1


def test_export_round_trips_through_convert_and_verify(trained: SimpleNamespace,
                                                       tmp_path: Path) -> None:
    from converters.fastap.model_file import load_model

    mat = trained.folder / "net-epoch-2.mat"
    assert main(["-q", "convert", str(mat), "-o", str(tmp_path / "model.pt")]) == 0
    assert main(["-q", "verify", str(mat), "--out", str(tmp_path)]) == 0
    converted, card = load_model(tmp_path / "model.pt")
    model = trained.setup.model
    state = load_checkpoint(trained.folder / "checkpoint-epoch-2.pt")["model"]
    model.load_state_dict(state)
    model.base.avgpool = torch.nn.AvgPool2d(7, 1)  # the authors' pool at 224
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 60
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x))
    assert card.embedding_dim == 16 and not card.synthetic


def test_ctrl_c_ends_cleanly_with_the_last_checkpoint_intact(tiny: SimpleNamespace,
                                                             tmp_path: Path) -> None:
    calls = {"n": 0}

    def interrupting(model, optimizer, opts):
        step = make_step(model, optimizer, opts)

        def call(images, labels):
            calls["n"] += 1
            if calls["n"] == 3:  # epoch 3 (one batch per epoch)
                raise KeyboardInterrupt
            return step(images, labels)
        return call

    setup = _setup(tiny, tmp_path, interrupting, epoch=4, testInterval=2,
                   batchesPerMetaPair=1)
    result = run_training(setup)
    assert result.interrupted and result.end_epoch == 2 and result.checkpoints == [2]
    assert load_checkpoint(setup.folder / "checkpoint-epoch-2.pt")["epoch"] == 2
    assert not list(setup.folder.glob("*.part"))
    run = parse_diaries(setup.folder)
    assert [m.reason for m in run.matlab_messages] == ["matlab_error"]
    assert "Operation terminated by user" in run.matlab_messages[0].text


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


def test_bad_options_are_clear_errors(tiny: SimpleNamespace, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = tiny.args(tmp_path)
    no_source = [a for i, a in enumerate(args) if a != "--torchvision-weights"
                 and (i == 0 or args[i - 1] != "--torchvision-weights")]
    _fails(no_source, capsys, "no base network or weights given", "--base")
    _fails(tiny.args(tmp_path, "--batch-size", "7"), capsys, "--batch-size 7", "even")
    _fails(tiny.args(tmp_path, "--max-gpu-imgs", "0"), capsys, "--max-gpu-imgs 0")
    _fails(tiny.args(tmp_path, "--base", str(tmp_path / "missing.mat")), capsys,
           "only one of")
    assert not (tmp_path / "train").exists()  # nothing written by any of them


def test_dataset_without_metaclasses_names_the_alternative(
        tiny: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["path class split"]
    for p in sorted(tiny.root.glob("bicycle_final/*.JPG")):
        c = int(p.name.split("_")[0])
        rows.append(f"{p} {c} {'train' if c <= 4 else 'test'}")
    (tmp_path / "list.txt").write_text("\n".join(rows) + "\n")
    argv = tiny.args(tmp_path / "out")
    argv[argv.index("products")] = "list"
    argv[argv.index("--root") + 1] = str(tmp_path)
    argv += ["--list", str(tmp_path / "list.txt")]
    _fails(argv, capsys, "meta-classes", "--sampler class-balanced")


def test_other_options_in_an_existing_folder(trained: SimpleNamespace, tiny: SimpleNamespace,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = trained.folder.parents[2]
    before = sorted(p.name for p in trained.folder.iterdir())
    _fails(tiny.args(out, "--epochs", "3", "--test-interval", "5"), capsys,
           str(trained.folder), "testInterval: 2 -> 5")
    _fails(tiny.args(out, "--epochs", "3", "--test-interval", "2",
                     "--batches-per-meta-pair", "2"), capsys, "pass --continue")
    assert sorted(p.name for p in trained.folder.iterdir()) == before


def test_damaged_checkpoint_on_resume(trained: SimpleNamespace, tiny: SimpleNamespace,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    copy = tmp_path / trained.folder.relative_to(trained.folder.parents[2])
    shutil.copytree(trained.folder, copy)
    ckpt = copy / "checkpoint-epoch-2.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    _fails(tiny.args(tmp_path, "--epochs", "3", "--test-interval", "2",
                     "--batches-per-meta-pair", "2", "--continue"), capsys,
           str(ckpt), "damaged checkpoint")


def test_a_full_disk_leaves_the_previous_checkpoint(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint-epoch-3.pt"
    payload = {"epoch": 3, "model": {"w": torch.ones(3)}, "optimizer": {}, "sampler": {},
               "options": {}, "history": []}
    save_checkpoint(path, payload)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(InputError, match="No space left on device") as info:
        save_checkpoint(path, {**payload, "epoch": 6})
    assert str(path) in str(info.value)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
    assert load_checkpoint(path)["epoch"] == 3
    assert math.isfinite(float(load_checkpoint(path)["model"]["w"].sum()))
