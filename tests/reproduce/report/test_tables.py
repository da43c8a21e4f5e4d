"""``fastap tables``: published values with status, logs at the released epoch, evaluations."""

from __future__ import annotations

import json
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
        "model,dataset,metric,value,epoch,images\n"
        "products-resnet50-M256-D512,products,R@1,76.0,12,60502\n")
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
    # k.csv states no epoch nor image count: shown, marked partial, not differenced
    assert r10["evaluated_partial"] and pd.isna(r10["evaluated_minus_published"])
    assert "epoch not stated" in r10["evaluated_on"]
    assert not row["evaluated_partial"] and row["evaluated_on"].startswith("released epoch 12")
    assert (row["evaluated_epoch"], row["evaluated_images"]) == (12, 60502)
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

    import torch

    model = tmp_path / "simulated-10bins-batch256-adam1e-05mult10-WD0e+00__net-epoch-30.pt"
    opts = {"dataset": "vid", "arch": "resnet50", "batchSize": 256, "dim": 512}
    card = ModelCard(family="resnet50-caffe", opts=opts, epoch=30)
    torch.save({"format_version": 1, "card_json": card.to_json()}, model)
    folder = tmp_path / "evaluations" / model.stem / "evaluate"
    folder.mkdir(parents=True)
    checks = [{"what": "small test images", "expected": 6493, "found": 6493, "ok": True},
              {"what": "large test images", "expected": 19777, "found": 19777, "ok": True},
              {"what": "train images", "expected": 113346, "found": 0, "ok": False}]
    (folder / "metrics.json").write_text(json.dumps({"dataset": {"count_checks": checks}}))
    pd.DataFrame([{"index": 0, "path": "a.jpg", "label": 1, "rank_first_positive": 1}]).to_csv(
        folder / "per_query_vid-small-authors.csv", index=False)  # companion: not a result

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
    assert md.splitlines()[0] == ("# Table 3: vid (Recall@K as published; MAP@R, NMI "
                                  "evaluated only (n/r in the paper); %)")
    assert (tmp_path / "out" / "tables" / "table1_products.md").read_text().splitlines()[0] \
        == "# Table 1: products (Recall@K, %)"
    # tables without such evaluations keep the paper's columns only
    t1 = pd.read_csv(tmp_path / "out" / "tables" / "table1_products.csv")
    assert set(t1["metric"]) == {"R@1", "R@10", "R@100", "R@1000"}

    assert not r50.loc["large R@5", "evaluated_partial"]
    assert r50.loc["large R@5", "evaluated_images"] == 19777


@pytest.fixture
def fastap(monkeypatch: pytest.MonkeyPatch):
    """``fastap`` with only the tables subcommand registered."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("tables",))
    return cli.main


def test_bad_cells_and_binary_files_are_named(tmp_path: Path, fastap, capsys) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "recall.csv").write_text(
        "model,metric,value\nproducts-resnet50-M256-D512,R@1,76.0\n"
        "products-resnet50-M256-D512,R@10,abc\n")
    out = tmp_path / "out"
    assert fastap(["tables", "--evaluations", str(tmp_path / "eval"), "--out", str(out)]) == 2
    assert "recall.csv:3: column 'value': 'abc' is not a number" in capsys.readouterr().err
    (tmp_path / "pub.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert fastap(["tables", "--published", str(tmp_path / "pub.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pub.csv: not a text CSV file" in err and "byte 0" in err
    (tmp_path / "pub2.csv").write_text(PUBLISHED.replace("76.4", "7x.4"))
    assert fastap(["tables", "--published", str(tmp_path / "pub2.csv"), "--out", str(out)]) == 2
    assert "pub2.csv:2: column 'value': '7x.4' is not a number" in capsys.readouterr().err
    assert not out.exists()


def test_inputs_that_give_nothing_are_errors(tmp_path: Path, fastap, capsys) -> None:
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    assert fastap(["tables", "--logs", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "empty: no fastap logs output" in capsys.readouterr().err
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "recall.csv").write_text(
        "model,dataset,metric,value\nunknown-model,products,R@1,10.0\n")
    assert fastap(["tables", "--evaluations", str(tmp_path / "eval"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "recall.csv:2: model 'unknown-model' is none of the released configurations" in err
    (tmp_path / "eval" / "recall.csv").write_text("name,score\nx,1\n")
    assert fastap(["tables", "--evaluations", str(tmp_path / "eval"), "--out", str(out)]) == 2
    assert "recall.csv: not an evaluation CSV" in capsys.readouterr().err
    assert not out.exists()


def test_partial_evaluation_is_marked_and_not_differenced(tmp_path: Path, fastap,
                                                          capsys) -> None:
    """An epoch-3 checkpoint scored on 12 images is shown as partial, never as the release."""
    import json

    import torch

    model = tmp_path / "products-FastAP-512-resnet18__net-epoch-3.pt"
    opts = {"dataset": "products", "arch": "resnet18", "batchSize": 256, "dim": 512}
    torch.save({"card_json": ModelCard(family="resnet18-pt-mcn", opts=opts, epoch=3).to_json()},
               model)
    folder = tmp_path / "evaluations" / "evaluate"
    folder.mkdir(parents=True)
    checks = [{"what": "test images", "expected": 60502, "found": 12, "ok": False}]
    (folder / "recall.json").write_text(json.dumps({"dataset": {"count_checks": checks}}))
    pd.DataFrame([{"dataset": "products", "protocol": "products", "family": "authors",
                   "K": k, "recall": 1.0, "model": str(model)} for k in (1, 10)]).to_csv(
        folder / "recall.csv", index=False)
    published = tmp_path / "pub.csv"
    published.write_text(PUBLISHED + "1,products,FastAP,ResNet-18,256,512,R@1,71.0,"
                                     "secondary,s5\n")
    assert fastap(["tables", "--evaluations", str(tmp_path / "evaluations"), "--published",
                   str(published), "--out", str(tmp_path / "out")]) == 0
    assert ("PARTIAL (not the released model on the full test set): FastAP ResNet-18 M=256 "
            "D=512 (R@1, R@10): epoch 3 checkpoint") in capsys.readouterr().out
    t1 = pd.read_csv(tmp_path / "out" / "tables" / "table1_products.csv")
    r18 = t1[t1["backbone"] == "ResNet-18"].set_index("metric")
    assert r18.loc["R@1", "evaluated"] == 100.0 and r18.loc["R@1", "evaluated_partial"]
    assert pd.isna(r18.loc["R@1", "evaluated_minus_published"])
    assert (r18.loc["R@1", "evaluated_epoch"], r18.loc["R@1", "evaluated_images"],
            r18.loc["R@1", "published_images"]) == (3, 12, 60502)
    assert r18.loc["R@1", "evaluated_on"] == ("PARTIAL: epoch 3 checkpoint (released: epoch "
                                              "20); 12 of the 60,502 test images")
    md = (tmp_path / "out" / "tables" / "table1_products.md").read_text()
    assert "| converted model (PARTIAL) | 100.0 [partial] | 100.0 [partial] |" in md
    assert "converted model | 100.0" not in md and "model - published" not in md
    assert "12 of the 60,502 test images" in md
    # integers stay integers in the CSV, a missing competitor cell says so
    text = (tmp_path / "out" / "tables" / "table1_products.csv").read_text()
    assert ",ResNet-18,256,512,R@1," in text and "256.0" not in text
    assert "| Triplet GoogLeNet D=512 | published | 42.1 [sec] | missing | missing | missing |" \
        in md


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
