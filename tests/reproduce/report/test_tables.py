"""``fastap tables``: published values with status, logs at the released epoch, evaluations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import reproduce.cli.main as cli
from reproduce.report.paper_tables import tables_command
from reproduce.report.released_models import RELEASED_MODELS, match_folder, match_options

PUBLISHED = """table,dataset,method,backbone,batch_size,dim,metric,value,status,source
1,products,FastAP,ResNet-50,256,512,R@1,76.4,secondary,"s1"
1,products,FastAP,ResNet-50,256,512,R@10,89.0,conflicting,"s2"
1,products,FastAP,ResNet-50,96,512,R@1000,,missing,"none"
1,products,Triplet,GoogLeNet,,512,R@1,42.1,secondary,"s3"
2,inshop,FastAP,ResNet-50,256,512,R@40,98.9,recollection,"s4"
"""
RUN = "products-FastAP-512-resnet50/real-10bins-batch256-adam1e-05mult10-WD0e+00"


def _write_logs(folder: Path) -> None:
    folder.mkdir()
    pd.DataFrame([{"run": RUN, "simulated": False, "dataset": "products", "arch": "resnet50",
                   "batchSize": 256, "dim": 512, "options_json": ""}]).to_csv(
        folder / "runs.csv", index=False)
    pd.DataFrame([
        {"run": RUN, "epoch": 9, "train_objective": 0.3, "R@1": 0.700, "R@10": 0.850},
        {"run": RUN, "epoch": 12, "train_objective": 0.29, "R@1": 0.751, "R@10": None},
    ]).to_csv(folder / "epochs.csv", index=False)


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "published.csv").write_text(PUBLISHED)
    _write_logs(tmp_path / "logs")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "recall.csv").write_text(
        "model,dataset,metric,value\nproducts-resnet50-M256-D512,products,R@1,76.0\n"
        "unknown-model,products,R@1,10.0\n")
    (tmp_path / "eval" / "k.csv").write_text(
        "dataset,arch,batch_size,dim,K,recall\nproducts,resnet50,256,512,10,0.887\n")
    return {"published": tmp_path / "published.csv", "logs": tmp_path / "logs",
            "eval": tmp_path / "eval", "out": tmp_path / "out"}


def test_registry_has_the_ten_released_models() -> None:
    assert len(RELEASED_MODELS) == 10 and len({m.key for m in RELEASED_MODELS}) == 10
    model = match_options({"dataset": "inshop", "arch": "resnet50", "batchSize": 96, "dim": 512})
    assert model is not None and model.epoch == 40 and model.table == 2
    assert match_options({"dataset": "inshop", "arch": "resnet50", "batchSize": 64, "dim": 512}) \
        is None
    assert match_folder("cachedir/vid-FastAP-512-resnet50/0312.1523-10bins-batch96-adam1e-05"
                        "mult10-WD0e+00").epoch == 40


def test_tables_from_known_inputs(inputs: dict[str, Path]) -> None:
    written = tables_command([inputs["logs"]], inputs["eval"], inputs["published"], inputs["out"])
    assert sorted(p.name for p in written.values()) == ["table1_products.csv",
                                                        "table2_inshop.csv", "table3_vid.csv"]
    t1 = pd.read_csv(inputs["out"] / "tables" / "table1_products.csv")
    row = t1[(t1["backbone"] == "ResNet-50") & (t1["batch_size"] == 256) & (t1["metric"] == "R@1")
             & (t1["method"] == "FastAP")].iloc[0]
    assert (row["published"], row["status"], row["released_epoch"]) == (76.4, "secondary", 12)
    assert row["logs_value"] == pytest.approx(75.1) and row["logs_epoch"] == 12
    assert row["evaluated"] == 76.0
    assert row["logs_minus_published"] == pytest.approx(-1.3)
    assert row["evaluated_minus_logs"] == pytest.approx(0.9)
    r10 = t1[(t1["backbone"] == "ResNet-50") & (t1["batch_size"] == 256) & (t1["metric"] == "R@10")
             & (t1["method"] == "FastAP")].iloc[0]
    assert r10["status"] == "conflicting"
    assert pd.isna(r10["logs_value"])  # epoch 12 has no R@10 in the log: missing, not 0
    assert r10["evaluated"] == pytest.approx(88.7)  # K/recall fraction -> percent
    r1000 = t1[(t1["batch_size"] == 96) & (t1["dim"] == 512) & (t1["metric"] == "R@1000")].iloc[0]
    assert pd.isna(r1000["published"]) and r1000["status"] == "missing"
    r18 = t1[t1["backbone"] == "ResNet-18"]
    assert len(r18) == 4 and r18["published"].isna().all() and (r18["status"] == "missing").all()
    assert (r18["logs_value"].isna() & r18["evaluated"].isna()).all()
    triplet = t1[t1["method"] == "Triplet"].iloc[0]
    assert triplet["published"] == 42.1 and pd.isna(triplet["logs_value"])
    t2 = pd.read_csv(inputs["out"] / "tables" / "table2_inshop.csv")
    r40 = t2[(t2["metric"] == "R@40") & (t2["batch_size"] == 256) & (t2["backbone"] == "ResNet-50")]
    assert r40["status"].item() == "recollection"
    md = (inputs["out"] / "tables" / "table1_products.md").read_text()
    assert "76.4 [sec]" in md and "89.0 [conf]" in md and "missing" in md
    assert "| 0.0 " not in md
    assert "| logs - published | -1.3 | missing |" in md
    tex = (inputs["out"] / "tables" / "table1_products.tex").read_text()
    assert r"\begin{tabular}" in tex and "R@1" in tex


def test_tables_without_logs_or_evaluations(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("tables",))
    assert cli.main(["tables", "--out", str(tmp_path)]) == 0
    t3 = pd.read_csv(tmp_path / "tables" / "table3_vid.csv")
    assert len(t3) == 18 and t3["logs_value"].isna().all() and t3["evaluated"].isna().all()
    assert set(t3["status"]) == {"recollection", "missing"}


def test_bad_published_file_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("tables",))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert cli.main(["tables", "--published", str(tmp_path / "bad.csv"), "--out",
                     str(tmp_path)]) == 2
    assert "bad.csv" in capsys.readouterr().err


def test_evaluate_command_csv_with_model_card(tmp_path: Path) -> None:
    """The ``fastap evaluate`` layout: metric/K/value rows in fractions (``unit``), protocol
    and family, model = .pt path; MAP@R, R-precision and NMI become extra columns."""
    import json

    import torch

    model = tmp_path / "simulated-10bins-batch256-adam1e-05mult10-WD0e+00__net-epoch-30.pt"
    opts = {"dataset": "vid", "arch": "resnet50", "batchSize": 256, "dim": 512}
    torch.save({"format_version": 1, "card_json": json.dumps({"opts": opts})}, model)
    folder = tmp_path / "evaluations" / model.stem / "evaluate"
    folder.mkdir(parents=True)

    def row(protocol: str, family: str, metric: str, value: float, K: int | None = None):
        return {"dataset": "vid", "protocol": protocol, "family": family, "metric": metric,
                "K": K, "value": value, "unit": "fraction", "model": str(model)}

    pd.DataFrame([
        row("vid-small-authors", "authors", "R@1", 0.9105, 1),
        row("vid-small-authors", "authors", "MAP@R", 0.5125),
        row("vid-small-authors", "authors", "NMI", 0.875),
        row("vid-large-authors", "authors", "R@5", 0.95, 5),
        row("vid-small-reid", "reid", "R@1", 0.5, 1),
        row("vid-small-reid", "reid", "R-precision", 0.25),
    ]).to_csv(folder / "metrics.csv", index=False)
    tables_command(None, tmp_path / "evaluations", None, tmp_path / "out")
    t3 = pd.read_csv(tmp_path / "out" / "tables" / "table3_vid.csv")
    r50 = t3[(t3["backbone"] == "ResNet-50") & (t3["batch_size"] == 256)].set_index("metric")
    assert r50.loc["small R@1", "evaluated"] == pytest.approx(91.05)  # not the reid 50.0
    assert r50.loc["small R@1", "evaluated_minus_published"] == pytest.approx(91.05 - 91.9,
                                                                              abs=0.006)
    assert r50.loc["large R@5", "evaluated"] == pytest.approx(95.0)
    # only the extra metrics some evaluation has, after the paper's; the reid R-precision
    # is not the authors' protocol and adds no column
    assert list(r50.index) == ["small R@1", "small R@5", "medium R@1", "medium R@5",
                               "large R@1", "large R@5", "small MAP@R", "small NMI"]
    assert r50.loc["small MAP@R", "evaluated"] == pytest.approx(51.25)
    assert r50.loc["small NMI", "evaluated"] == pytest.approx(87.5)
    assert r50.loc["small MAP@R", "status"] == "not reported"
    assert pd.isna(r50.loc["small MAP@R", "published"])
    assert pd.isna(r50.loc["small MAP@R", "evaluated_minus_published"])
    assert r50["evaluated"].notna().sum() == 4
    assert t3[t3["batch_size"] == 96]["evaluated"].isna().all()
    md = (tmp_path / "out" / "tables" / "table3_vid.md").read_text()
    assert "small MAP@R | small NMI |" in md and "| n/r | n/r |" in md
    assert "| 51.2 | 87.5 |" in md and "n/r: not reported in the paper" in md
    # tables without such evaluations keep the paper's columns only
    t1 = pd.read_csv(tmp_path / "out" / "tables" / "table1_products.csv")
    assert set(t1["metric"]) == {"R@1", "R@10", "R@100", "R@1000"}


def test_recall_csv_of_earlier_evaluate_versions_is_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "evaluations"
    folder.mkdir()
    pd.DataFrame([{"dataset": "products", "protocol": "products", "family": "authors", "K": 1,
                   "recall": 0.8125, "model": "products-resnet50-M256-D512"}]).to_csv(
        folder / "recall.csv", index=False)
    tables_command(None, folder, None, tmp_path / "out")
    t1 = pd.read_csv(tmp_path / "out" / "tables" / "table1_products.csv")
    row = t1[(t1["batch_size"] == 256) & (t1["dim"] == 512) & (t1["metric"] == "R@1")
             & (t1["backbone"] == "ResNet-50")].iloc[0]
    assert row["evaluated"] == pytest.approx(81.25)
