"""``fastap tables``: published values with status, logs at the released epoch, evaluations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import reproduce.cli.main as cli
from converters.fastap.card import ModelCard
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
    """The ``fastap evaluate`` layout: K/recall rows, protocol and family, model = .pt path."""

    import torch

    model = tmp_path / "simulated-10bins-batch256-adam1e-05mult10-WD0e+00__net-epoch-30.pt"
    opts = {"dataset": "vid", "arch": "resnet50", "batchSize": 256, "dim": 512}
    card = ModelCard(family="resnet50-caffe", opts=opts)
    torch.save({"format_version": 1, "card_json": card.to_json()}, model)
    folder = tmp_path / "evaluations" / model.stem / "evaluate"
    folder.mkdir(parents=True)
    pd.DataFrame([
        {"dataset": "vid", "protocol": "vid-small-authors", "family": "authors", "K": 1,
         "recall": 0.9105, "model": str(model)},
        {"dataset": "vid", "protocol": "vid-large-authors", "family": "authors", "K": 5,
         "recall": 0.95, "model": str(model)},
        {"dataset": "vid", "protocol": "vid-small-reid", "family": "reid", "K": 1,
         "recall": 0.5, "model": str(model)},
    ]).to_csv(folder / "recall.csv", index=False)
    tables_command(None, tmp_path / "evaluations", None, tmp_path / "out")
    t3 = pd.read_csv(tmp_path / "out" / "tables" / "table3_vid.csv")
    r50 = t3[(t3["backbone"] == "ResNet-50") & (t3["batch_size"] == 256)].set_index("metric")
    assert r50.loc["small R@1", "evaluated"] == pytest.approx(91.05)  # not the reid 50.0
    assert r50.loc["small R@1", "evaluated_minus_published"] == pytest.approx(91.05 - 91.9,
                                                                              abs=0.006)
    assert r50.loc["large R@5", "evaluated"] == pytest.approx(95.0)
    assert r50["evaluated"].notna().sum() == 2
    assert t3[t3["batch_size"] == 96]["evaluated"].isna().all()
