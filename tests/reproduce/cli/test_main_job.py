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
    assert "SIMULATED" in summary and "SYNTHETIC" in summary
    assert "--models DIR" in summary and "--data DIR" in summary and "--logs DIR" in summary
    assert "Overall: every check passed" in summary


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


def test_real_inputs_fill_the_evaluated_column(tmp_path: Path, build: SimpleNamespace) -> None:
    models = tmp_path / "models" / "products-FastAP-512-resnet18"
    write_synthetic_checkpoint(models / "net-epoch-3.mat", "resnet18-pt-mcn", dim=512,
                               with_state=False, compress=False)
    data = tmp_path / "data"
    build.products(data / "products", classes=3, per_class=2, identical=True)
    out = tmp_path / "out"
    status = main(["reproduce", "--models", str(tmp_path / "models"), "--data", str(data),
                   "--logs", str(SAMPLES_DIR), "--out", str(out)])
    assert status == 0
    summary = (out / "reproduce" / "summary.md").read_text()
    assert "## evaluate products-FastAP-512-resnet18__net-epoch-3: ok" in summary
    assert "SYNTHETIC" not in summary
    table = pd.read_csv(out / "tables" / "table1_products.csv")
    row = table[(table["method"] == "FastAP") & (table["backbone"] == "ResNet-18")
                & (table["metric"] == "R@1")]
    # every query's nearest other image is an identical copy of the same class
    assert row["evaluated"].tolist() == [100.0]
