"""``fastap evaluate`` end to end through a small converted model file, and its bad input."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from converters.fastap.card import ModelCard, ModelInput
from converters.fastap.families import build_model
from converters.fastap.model_file import save_model
from reproduce.cli.main import main
from reproduce.evaluation.evaluate import evaluate
from reproduce.evaluation.metrics import nmi_available


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ResNet-18 FastAP model (8-d) saved as a converted model file."""
    import torch

    torch.manual_seed(0)
    model = build_model("resnet18-pt-mcn", 8)
    card = ModelCard(family="resnet18-pt-mcn", embedding_dim=8, source_sha256="ab" * 32,
                     input=ModelInput(average_image=np.array([0.485, 0.456, 0.406],
                                                             dtype=np.float32)))
    return save_model(tmp_path_factory.mktemp("model") / "tiny.pt", model, card)


@pytest.mark.skipif(nmi_available() is not None, reason="NMI needs faiss and scikit-learn")
def test_cli_products_end_to_end(model_file: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 build: SimpleNamespace) -> None:
    # within a class every image is the same file content, classes differ: each query's
    # nearest other image is a copy of itself, so Recall@1 is 1 (6 images: K >= 10 dropped)
    root = build.products(tmp_path / "sop", classes=3, per_class=2, identical=True)
    out = tmp_path / "out"
    status = main(["evaluate", "--model", str(model_file), "--dataset", "products",
                   "--root", str(root), "--out", str(out), "--batch-size", "5",
                   "--device", "cpu"])
    assert status == 0
    printed = capsys.readouterr().out
    # each class is one image twice: R = 1 and the copy comes first; 3 tight clusters
    assert ("K:    1, Recall: 1.000\nMAP@R: 1.000, R-precision: 1.000, NMI: 1.000\n"
            "results:") in printed
    folder = out / "evaluate"
    table = pd.read_csv(folder / "metrics.csv")
    assert table["metric"].tolist() == ["R@1", "MAP@R", "R-precision", "NMI"]
    assert table["K"].tolist()[0] == 1 and table["K"].isna().tolist()[1:] == [True] * 3
    assert table["value"].tolist() == [1.0, 1.0, 1.0, pytest.approx(1.0, rel=1e-12)]
    assert set(table["protocol"]) == {"products"} and set(table["unit"]) == {"fraction"}
    assert set(table["device"]) == {"cpu"}
    summary = json.loads((folder / "metrics.json").read_text())
    prot = summary["protocols"]["products"]
    assert prot["Ks_dropped"] == [10, 100, 1000]
    assert prot["remove_diag"] is True and prot["family"] == "authors"
    pre = summary["preprocessing"]
    assert pre["name"] == "matlab" and pre["pre_resize"] == [256, 256]
    assert pre["jpeg_reencode_quality"] == 75 and pre["std"] is None
    assert summary["model"]["source_sha256"] == "ab" * 32 and summary["device"] == "cpu"
    assert prot["nmi_clustering"]["k"] == 3 and prot["nmi_clustering"]["seed"] == 0
    assert prot["queries_without_positives_per_draw"] == [0]
    per_query = pd.read_csv(folder / "per_query_products.csv")
    assert len(per_query) == 6 and (per_query["rank_first_positive"] == 0).all()
    assert (per_query["ap_at_r"] == 1.0).all() and (per_query["r_precision"] == 1.0).all()
    assert (folder / "run_info.json").is_file()
    # second run: the embeddings come from the cache
    assert list((out / "cache" / "embeddings").glob("*/features.npy"))


@pytest.mark.skipif(nmi_available() is not None, reason="NMI needs faiss and scikit-learn")
def test_vehicleid_both_protocols_labelled(model_file: Path, tmp_path: Path,
                                           build: SimpleNamespace) -> None:
    root = build.vehicleid(tmp_path / "vid", vehicles=3, per_vehicle=3, identical=True)
    summary = evaluate(model_file, "vid", root, protocol="all", out=tmp_path / "out",
                       preprocessing="torchvision", progress=False)
    names = sorted(summary["protocols"])
    assert names == ["vid-small-authors", "vid-small-reid"]
    authors = summary["protocols"]["vid-small-authors"]
    reid = summary["protocols"]["vid-small-reid"]
    assert authors["family"] == "authors" and authors["remove_diag"] is True
    assert reid["family"] == "reid" and reid["draws"] == 10 and reid["remove_diag"] is False
    assert reid["num_database"] == 3 and reid["num_query"] == 6
    assert authors["recall"] == [1.0, 1.0] and authors["Ks"] == [1, 5]
    assert reid["recall"] == [1.0] and reid["Ks_dropped"] == [5]  # 3 gallery images
    assert summary["preprocessing"]["name"] == "torchvision"
    table = pd.read_csv(tmp_path / "out" / "evaluate" / "metrics.csv")
    assert set(table["family"]) == {"authors", "reid"}
    # query = database and gallery + probes are the same 9 images: one NMI for both
    assert authors["nmi_clustering"] == reid["nmi_clustering"]
    assert reid["map_at_r"] == 1.0 and len(reid["map_at_r_per_draw"]) == 10


def test_cli_interpolation_recorded_and_not_served_from_the_other_cache(
        model_file: Path, tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    out = tmp_path / "out"
    base = ["evaluate", "--model", str(model_file), "--dataset", "products", "--root",
            str(root), "--out", str(out), "--no-jpeg-reencode"]
    assert main(base) == 0
    cubic = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert main([*base, "--interpolation", "bilinear", "--greyscale-mean", "per-channel"]) == 0
    linear = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert cubic["preprocessing"]["interpolation"] == "bicubic"
    assert linear["preprocessing"]["interpolation"] == "bilinear"
    assert linear["preprocessing"]["greyscale_mean"] == "per-channel"
    assert len(list((out / "cache" / "embeddings").glob("*/features.npy"))) == 2
    assert set(pd.read_csv(out / "evaluate" / "metrics.csv")["interpolation"]) == {"bilinear"}
    info = json.loads((out / "evaluate" / "run_info.json").read_text())
    assert "bilinear" in json.dumps(info)


@pytest.mark.parametrize("argv_tail,message", [
    (["--dataset", "products", "--protocol", "reid"], "no 'reid' protocol"),
    (["--dataset", "products", "--protocol", "nonsense"], "unknown protocol 'nonsense'"),
    (["--dataset", "inshop"], "list_bbox_inshop.txt"),
])
def test_cli_bad_input_exits_2(model_file: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], argv_tail: list[str],
                               message: str,
                               build: SimpleNamespace) -> None:
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    status = main(["evaluate", "--model", str(model_file), "--root", str(root),
                   "--out", str(tmp_path / "out"), *argv_tail])
    assert status == 2
    assert message in capsys.readouterr().err


def test_cli_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["evaluate", "--model", str(tmp_path / "absent.pt"), "--dataset", "vid",
                   "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert status == 2
    assert "absent.pt" in capsys.readouterr().err


def test_vid_family_with_a_named_protocol_keeps_every_size(tmp_path: Path,
                                                           build: SimpleNamespace) -> None:
    # "authors,vid-medium-reid" used to load only the medium split, so the authors family
    # silently lost vid-small-authors
    from reproduce.evaluation.evaluate import _load, select_protocols

    root = build.vehicleid(tmp_path / "vid", vehicles=3, per_vehicle=2)
    split = root / "train_test_split"
    (split / "test_list_1600.txt").write_text((split / "test_list_800.txt").read_text())
    ds = _load("vid", root, ["authors", "vid-medium-reid"], False, "none")
    names = [p.name for p in select_protocols(ds, "authors,vid-medium-reid")]
    assert sorted(names) == ["vid-medium-authors", "vid-medium-reid", "vid-small-authors"]
    # names alone still load only the sizes they need
    only = _load("vid", root, ["vid-medium-reid"], False, "none")
    assert sorted(only.protocols) == ["vid-medium-authors", "vid-medium-reid"]


# ---------------------------------------------------------------------------- CUB, Cars, list


@pytest.mark.parametrize("dataset", ["cub", "cars"])
def test_cli_cub_and_cars_end_to_end(model_file: Path, tmp_path: Path, dataset: str,
                                     capsys: pytest.CaptureFixture[str],
                                     build: SimpleNamespace) -> None:
    # identical images within a class, distinct colours across classes: Recall@1 = 1 on the
    # 6 test images (3 test classes x 2); K = 8 and above dropped (5 other images)
    root = getattr(build, dataset)(tmp_path / dataset, identical=True)
    out = tmp_path / "out"
    status = main(["evaluate", "--model", str(model_file), "--dataset", dataset,
                   "--root", str(root), "--out", str(out), "--no-jpeg-reencode"])
    assert status == 0
    assert "K:    1, Recall: 1.000" in capsys.readouterr().out
    summary = json.loads((out / "evaluate" / "metrics.json").read_text())
    prot = summary["protocols"][dataset]
    assert prot["num_query"] == 6 and prot["remove_diag"] is True
    assert prot["Ks"] == [1, 2, 4] and prot["recall"][0] == 1.0
    assert summary["dataset"]["pre_resize"] == [256, 256]


def test_cli_list_end_to_end(model_file: Path, tmp_path: Path,
                             build: SimpleNamespace) -> None:
    root = tmp_path / "data"
    lines = ["path,class,split"]
    for i in range(6):
        build.jpeg(root / "img" / f"{i}.jpg", build.colour(i // 2))  # pairs of copies
        lines.append(f"img/{i}.jpg,{i // 2},{'query' if i % 2 else 'gallery'}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    status = main(["evaluate", "--model", str(model_file), "--dataset", "list",
                   "--list", str(root / "list.csv"), "--out", str(out), "--no-jpeg-reencode"])
    assert status == 0
    summary = json.loads((out / "evaluate" / "metrics.json").read_text())
    prot = summary["protocols"]["list-query-gallery"]
    assert prot["num_query"] == 3 and prot["num_database"] == 3 and prot["recall"] == [1.0]
    assert summary["dataset"]["name"] == "list"
    info = json.loads((out / "evaluate" / "run_info.json").read_text())
    assert str(root / "list.csv") in json.dumps(info)


@pytest.mark.parametrize("argv_tail,message", [
    (["--dataset", "list"], "needs an image list (--list FILE)"),
    (["--dataset", "cub"], "--root is required for --dataset cub"),
    (["--dataset", "products", "--root", ".", "--list", "x.csv"],
     "--list x.csv is for --dataset list, not products"),
    (["--dataset", "list", "--list", "LIST"], "list.csv:3: unknown split value 'quer'"),
    (["--dataset", "list", "--list", "LIST_MISSING"], "1 of 2 images missing: line 3"),
])
def test_cli_user_dataset_bad_input_exits_2_and_writes_nothing(
        model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        argv_tail: list[str], message: str, build: SimpleNamespace) -> None:
    build.jpeg(tmp_path / "img" / "0.jpg", (10, 20, 30))
    (tmp_path / "list.csv").write_text("path,class,split\nimg/0.jpg,1,query\nimg/0.jpg,1,quer\n")
    (tmp_path / "missing.csv").write_text("path,class\nimg/0.jpg,1\nimg/9.jpg,1\n")
    tail = [{"LIST": str(tmp_path / "list.csv"),
             "LIST_MISSING": str(tmp_path / "missing.csv")}.get(a, a) for a in argv_tail]
    out = tmp_path / "out"
    status = main(["evaluate", "--model", str(model_file), "--out", str(out), *tail])
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (out / "evaluate").exists()


# ---------------------------------------------------------------------------- the model card


Loaded = tuple[object, dict[str, object]]


@pytest.fixture(scope="module")
def tiny(model_file: Path) -> Loaded:
    """The module's model file loaded once: ``(model, card)``."""
    from converters.fastap.model_file import load_model

    return load_model(model_file)


def _model_with_card(tiny: Loaded, tmp_path: Path, **card_fields: object) -> Path:
    """The tiny model saved again with extra card fields (a new file name per call)."""
    model, card = tiny
    path = tmp_path / f"carded_{len(list(tmp_path.glob('carded_*.pt')))}.pt"
    return save_model(path, model, dataclasses.replace(card, **card_fields))


@pytest.mark.parametrize("best,name,average", [
    ("torchvision", "torchvision", None),
    ("matlab", "matlab", [0.485, 0.456, 0.406]),
    ("matlab_mean_x255", "matlab", [123.675, 116.28, 103.53]),
])
def test_card_input_scaling_chooses_the_preprocessing(
        tiny: Loaded, tmp_path: Path, best: str, name: str, average: list[float] | None,
        build: SimpleNamespace) -> None:
    # what `fastap convert --check-input` stores: input_scaling.best
    path = _model_with_card(tiny, tmp_path, input_scaling={"best": best, "margin": 3.0})
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    summary = evaluate(path, "products", root, out=tmp_path / "out", jpeg_quality=None,
                       progress=False)
    pre = summary["preprocessing"]
    assert pre["name"] == name
    assert f"input_scaling.best = {best}" in pre["chosen_by"]
    if average is not None:
        np.testing.assert_allclose(pre["average_image"], average, atol=1e-4)
    # the user's --preprocessing wins over the card
    forced = evaluate(path, "products", root, out=tmp_path / "out2", jpeg_quality=None,
                      preprocessing="matlab" if name == "torchvision" else "torchvision",
                      progress=False)
    assert forced["preprocessing"]["name"] != name
    assert forced["preprocessing"]["chosen_by"] == "--preprocessing"


def test_card_preprocessing_default_and_unknown_scaling(
        tiny: Loaded, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        build: SimpleNamespace) -> None:
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    path = _model_with_card(tiny, tmp_path, preprocessing={"default": "torchvision"},
                            input_scaling=None)
    summary = evaluate(path, "products", root, out=tmp_path / "out", progress=False)
    assert summary["preprocessing"]["name"] == "torchvision"
    assert "preprocessing.default" in summary["preprocessing"]["chosen_by"]
    odd = _model_with_card(tiny, tmp_path, input_scaling={"best": "caffe"})
    status = main(["evaluate", "--model", str(odd), "--dataset", "products", "--root",
                   str(root), "--out", str(tmp_path / "out3")])
    assert status == 2
    assert "input_scaling.best 'caffe'" in capsys.readouterr().err


def test_card_trained_on_another_dataset_warns_once(
        tiny: Loaded, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        build: SimpleNamespace) -> None:
    path = _model_with_card(tiny, tmp_path, opts={"dataset": "inshop", "arch": "resnet18"})
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    with caplog.at_level(logging.WARNING, logger="reproduce.evaluation.evaluate"):
        evaluate(path, "products", root, out=tmp_path / "out", jpeg_quality=None,
                 progress=False)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "reproduce.evaluation.evaluate" and r.levelno == logging.WARNING
             and "trained on" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "trained on inshop" in lines[0] and "evaluating on products" in lines[0]
    caplog.clear()
    same = _model_with_card(tiny, tmp_path, opts={"dataset": "products"})
    with caplog.at_level(logging.WARNING, logger="reproduce.evaluation.evaluate"):
        evaluate(same, "products", root, out=tmp_path / "out2", jpeg_quality=None,
                 progress=False)
    assert "trained on" not in caplog.text


def test_device_choice(monkeypatch) -> None:
    import torch

    from reproduce.errors import InputError
    from reproduce.evaluation.evaluate import resolve_device

    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="--device cuda: no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    with pytest.raises(InputError, match="--device tpu"):
        resolve_device("tpu")


def test_cli_cuda_without_a_device_exits_2(model_file: Path, tmp_path: Path, monkeypatch,
                                           capsys: pytest.CaptureFixture[str],
                                           build: SimpleNamespace) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = build.products(tmp_path / "sop", classes=2, per_class=2)
    status = main(["evaluate", "--model", str(model_file), "--dataset", "products", "--root",
                   str(root), "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert status == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out" / "evaluate" / "metrics.csv").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_evaluation_matches_cpu(model_file: Path, tmp_path: Path,
                                     build: SimpleNamespace) -> None:
    root = build.products(tmp_path / "sop", classes=4, per_class=3)
    runs = {device: evaluate(model_file, "products", root, out=tmp_path / device,
                             device=device, progress=False) for device in ("cpu", "cuda")}
    assert runs["cuda"]["device"] == "cuda"
    cpu, gpu = runs["cpu"]["protocols"]["products"], runs["cuda"]["protocols"]["products"]
    for key in ("recall", "map_at_r", "r_precision"):
        assert gpu[key] == cpu[key], key
    feats = {d: np.load(next((tmp_path / d / "cache" / "embeddings").glob("*/features.npy")))
             for d in runs}
    np.testing.assert_allclose(feats["cuda"], feats["cpu"], rtol=0, atol=1e-4)


def test_nmi_skipped_and_recorded_without_its_libraries(model_file: Path, tmp_path: Path,
                                                        monkeypatch, build: SimpleNamespace
                                                        ) -> None:
    import reproduce.evaluation.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "nmi_available", lambda: "needs faiss (not installed)")
    root = build.products(tmp_path / "sop", classes=3, per_class=2, identical=True)
    summary = evaluate(model_file, "products", root, out=tmp_path / "out", device="cpu",
                       progress=False)
    prot = summary["protocols"]["products"]
    assert prot["nmi"] is None and prot["nmi_skipped"] == "needs faiss (not installed)"
    assert prot["map_at_r"] == 1.0
    table = pd.read_csv(tmp_path / "out" / "evaluate" / "metrics.csv")
    assert table["metric"].tolist() == ["R@1", "MAP@R", "R-precision"]


def test_ctrl_c_is_one_line_exit_130_and_the_rerun_finishes(
        model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, build: SimpleNamespace) -> None:
    from converters.fastap.families import FastAPEmbedding

    root = build.products(tmp_path / "sop", classes=3, per_class=2, identical=True)
    argv = ["--quiet", "evaluate", "--model", str(model_file), "--dataset", "products", "--root",
            str(root), "--out", str(tmp_path / "out"), "--batch-size", "2", "--device", "cpu"]
    real_forward = FastAPEmbedding.forward
    calls = []

    def interrupted(self: FastAPEmbedding, x):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_forward(self, x)

    monkeypatch.setattr(FastAPEmbedding, "forward", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "evaluate" / "metrics.csv").exists()
    monkeypatch.setattr(FastAPEmbedding, "forward", real_forward)
    assert main(argv) == 0
    assert (tmp_path / "out" / "evaluate" / "metrics.csv").is_file()
