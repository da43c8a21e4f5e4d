"""``fastap reproduce`` end to end on the embedded defaults, in a temporary folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from converters.fastap.synthetic import write_synthetic_checkpoint
from reproduce.cli.main import main
from reproduce.report.log_tables import SAMPLES_DIR


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("reproduce")
    return main(["reproduce", "--out", str(out)]), out


def test_default_run_passes_and_writes_every_output(default_run: tuple[int, Path]) -> None:
    status, out = default_run
    assert status == 0
    parity = pd.read_csv(out / "parity" / "parity.csv")
    assert len(parity) > 100 and (parity["verdict"] == "pass").all()
    assert {"tiny_double", "sop_m256_d512_single", "eval_ties"} <= set(parity["case"])
    for name in ("table1_products", "table2_inshop", "table3_vid"):
        table = pd.read_csv(out / "tables" / f"{name}.csv")
        assert not table.empty
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    epochs = pd.read_csv(out / "logs" / "epochs.csv")
    assert {"run", "epoch", "train_objective"} <= set(epochs.columns)
    assert (out / "plots" / "parity_summary.pdf").stat().st_size > 1000
    models = list((out / "reproduce" / "models").glob("*.pt"))
    assert len(models) == 1
    verify = pd.read_csv(models[0].with_suffix(".verify.csv"))
    assert verify["ok"].all() and "feats_l2" in set(verify["var"])


def test_summary_says_what_came_from_what(default_run: tuple[int, Path]) -> None:
    _, out = default_run
    summary = (out / "reproduce" / "summary.md").read_text()
    assert "SYNTHETIC" in summary and "SMALL LOCAL RUN" in summary
    assert "SIMULATED" not in summary  # the curves come from the small run made here
    assert "--models DIR" in summary and "--data DIR" in summary and "--logs DIR" in summary
    assert "Overall: every check passed" in summary


def test_small_local_run_is_trained_converted_evaluated_and_never_the_papers(
        default_run: tuple[int, Path]) -> None:
    from logs.diary_parser import parse_diaries
    from reproduce.report.released_models import match_run

    _, out = default_run
    summary = (out / "reproduce" / "summary.md").read_text()
    assert "## train SMALL LOCAL RUN: ok" in summary
    assert "equal to the run's own evaluation" in summary
    folder, = (out / "reproduce" / "small_run" / "train").glob("*/small-local-run-*")
    run = parse_diaries(folder)
    assert sorted(run.epochs) == list(range(1, 9)) and run.unrecognised == []
    assert match_run(run.options, str(folder)) is None  # never a released configuration
    epochs = pd.read_csv(out / "logs" / "epochs.csv")
    assert set(epochs["run"]) and all("small-local-run" in r for r in epochs["run"])
    diary_rows = epochs[~epochs["run"].str.contains("[stats", regex=False)]
    assert list(diary_rows["train_objective"]) == [run.epochs[e].train_objective
                                                   for e in sorted(run.epochs)]
    for name in ("table1_products", "table2_inshop", "table3_vid"):
        table = pd.read_csv(out / "tables" / f"{name}.csv")
        assert table["logs_run"].isna().all()  # not counted as any published configuration
    assert list((out / "plots").glob("curves_*small-local-run*.png"))


def test_bad_inputs_exit_2_without_output(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["reproduce", "--models", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reproduce", "--models", str(empty), "--out", str(out)]) == 2
    assert "no .mat checkpoint" in capsys.readouterr().err
    assert main(["reproduce", "--logs", str(tmp_path / "nolog"), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, build: SimpleNamespace
             ) -> tuple[int, Path]:
    """--models with a good epoch-3 checkpoint and a truncated one, 12 SOP-style images."""
    tmp_path = tmp_path_factory.mktemp("real")
    models = tmp_path / "models"
    good = write_synthetic_checkpoint(models / "products-FastAP-512-resnet18" / "net-epoch-3.mat",
                                      "resnet18-pt-mcn", dim=512, with_state=False,
                                      compress=False)
    bad = models / "products-FastAP-512-resnet50" / "net-epoch-12.mat"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:5_000_000])
    data = tmp_path / "data"
    build.products(data / "products", classes=3, per_class=4, identical=True)
    out = tmp_path / "out"
    status = main(["reproduce", "--models", str(models), "--data", str(data),
                   "--logs", str(SAMPLES_DIR), "--out", str(out)])
    return status, out


def test_one_bad_checkpoint_does_not_sink_the_others(real_run: tuple[int, Path]) -> None:
    status, out = real_run
    assert status == 1
    summary = (out / "reproduce" / "summary.md").read_text()
    assert "## convert net-epoch-12.mat: failed" in summary
    assert "net-epoch-12.mat: cannot read MAT v5/v7 file (truncated or damaged?)" in summary
    assert "## convert net-epoch-3.mat: ok" in summary
    assert "## evaluate products-FastAP-512-resnet18__net-epoch-3: ok" in summary
    assert "## tables: ok" in summary and "## plots: ok" in summary
    assert summary.splitlines()[-1].startswith("Overall: FAILED: convert net-epoch-12.mat")
    # the job did not fall back to a checkpoint of its own (the given ones are synthetic
    # too, and are labelled so: that is what the PARTIAL line says)
    assert "reproduce/synthetic" not in summary and "SYNTHETIC checkpoint;" in summary


def test_partial_evaluation_is_never_the_released_model(real_run: tuple[int, Path]) -> None:
    """Epoch 3 (released: 20) on 12 images (published: 60,502): marked in every output."""
    _, out = real_run
    table = pd.read_csv(out / "tables" / "table1_products.csv")
    rows = table[(table["method"] == "FastAP") & (table["backbone"] == "ResNet-18")]
    r1 = rows.set_index("metric").loc["R@1"]
    # every query's nearest other image is an identical copy of the same class
    assert r1["evaluated"] == 100.0 and r1["evaluated_partial"]
    assert (r1["evaluated_epoch"], r1["evaluated_images"]) == (3, 12)
    assert rows["evaluated_minus_published"].isna().all()
    md = (out / "tables" / "table1_products.md").read_text()
    assert "| converted model (PARTIAL) | 100.0 [partial] | 100.0 [partial] |" in md
    assert "| converted model | 100.0" not in md
    assert "epoch 3 checkpoint (released: epoch 20); 12 of the 60,502 test images" in md
    summary = (out / "reproduce" / "summary.md").read_text()
    # the test's checkpoint is one of ours, and its card says so
    assert ("- PARTIAL: products-FastAP-512-resnet18__net-epoch-3: SYNTHETIC checkpoint; "
            "epoch 3 checkpoint (released: epoch 20); 12 of the 60,502 test images") in summary
    assert "- PARTIAL: table1_products: FastAP ResNet-18 M=256 D=512 (R@1, R@10, MAP@R, " \
        "R-precision, NMI): SYNTHETIC checkpoint; epoch 3" in summary
    last = summary.splitlines()[-1]
    assert "PARTIAL evaluations, NOT the released models" in last
    assert "every check passed" not in last


def test_logs_without_a_fastap_diary_fail_the_logs_stage(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train.log").write_text("Epoch 1 loss 0.3\nall done\n")
    models = tmp_path / "models" / "x"
    models.mkdir(parents=True)
    (models / "net-epoch-1.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b" " * 200)
    out = tmp_path / "out"
    status = main(["reproduce", "--models", str(tmp_path / "models"), "--logs", str(foreign),
                   "--out", str(out)])
    assert status == 1
    summary = (out / "reproduce" / "summary.md").read_text()
    assert "## logs: failed" in summary and "no FastAP diary in" in summary
    assert "0 epoch rows" not in summary
    assert not list((out / "plots").glob("curves_*"))
    assert "## tables: ok" in summary and "the log columns stay empty" in summary
