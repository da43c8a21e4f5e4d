"""``fastap inspect``: every real file inspects cleanly; bad input exits 2 naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import reproduce.cli.main as cli
from converters.errors import MatConvNetError
from converters.matio.write import save_mat
from converters.mcn.inspect_report import format_inspection, inspect_file
from tests import REALFILES

MAT = REALFILES / "mat"
REAL_FILES = sorted(MAT.glob("*.mat"))


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``fastap`` with only the inspect subcommand registered (others may not exist yet)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("inspect",))
    return cli.main(argv)


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_every_real_file_inspects_cleanly(path: Path) -> None:
    report = inspect_file(path)
    assert report["layers"] and report["params"]
    assert report["param_count"] == sum(p["count"] for p in report["params"])
    text = format_inspection(report)
    for layer in report["layers"]:
        assert layer["name"] in text
    json.dumps(report)  # JSON-able as is


def test_real_file_facts() -> None:
    dncnn = inspect_file(MAT / "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat")
    assert dncnn["format"] == "v7.3" and dncnn["layout"] == "dagnn"
    assert dncnn["layer_types"]["dagnn.BatchNorm"] == 15
    moments = [p for p in dncnn["params"] if p["name"].endswith("_m")]
    assert len(moments) == 15 and all(p["shape"] == [64, 2] for p in moments)

    mnist = inspect_file(MAT / "dagnn_v5_struct_mnist_new_net.mat")
    assert mnist["layout"] == "dagnn-struct"
    assert [v["name"] for v in mnist["variables"]] == ["vars", "params", "layers", "meta"]

    assert inspect_file(MAT / "dagnn_v5_MSSRNet_x2_concat_nometa.mat")["meta"] is None
    dcf = inspect_file(MAT / "simplenn_v5_DCFNet-net-7-125-2_lrn.mat")
    assert dcf["layout"] == "simplenn" and "normalization" in dcf["meta"]
    assert dcf["meta"]["arch"] == "'DCFNet'"


def test_oneclick_checkpoint_stats_summary() -> None:
    report = inspect_file(MAT / "simplenn_v5_ckpt_oneclick_net-epoch-50.mat")
    stats = report["stats"]
    assert set(stats) == {"train", "val"}
    for name in ("train", "val"):
        assert stats[name]["epochs"] == 50
        assert stats[name]["fields"] == ["objective", "top1err", "top5err", "num", "time"]
    assert {"name": "state", "shape": [1, 1], "class": "struct"} in report["variables"]
    assert "50 epochs" in format_inspection(report)


def test_cli_prints_text_and_json(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = MAT / "dagnn_v5_struct_mnist_new_net.mat"
    assert _run(["inspect", str(path)], monkeypatch) == 0
    text = capsys.readouterr().out
    assert "format:  MAT v5" in text and "dagnn.Pooling" in text
    assert _run(["inspect", str(path), "--json"], monkeypatch) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "dagnn-struct" and len(report["layers"]) == 8


def _truncated(tmp_path: Path) -> Path:
    source = (MAT / "dagnn_v5_LapSRN_x2.mat").read_bytes()
    path = tmp_path / "half.mat"
    path.write_bytes(source[: len(source) // 2])
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "readme.mat"
    path.write_text("not a MAT file at all, just some text that happens to be long enough\n" * 3)
    return path


def _no_network(tmp_path: Path) -> Path:
    return save_mat(tmp_path / "features.mat", {"feats": np.zeros((4, 2), np.float32)})


@pytest.mark.parametrize("make", [_truncated, _text, _no_network],
                         ids=["truncated", "text", "no-network"])
def test_bad_input_exits_2_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], make) -> None:
    path = make(tmp_path)
    with pytest.raises(MatConvNetError, match=path.name):
        inspect_file(path)
    assert _run(["inspect", str(path)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastap inspect: error: ") and path.name in err


def test_fastap_options_tell_the_released_models_apart(build: SimpleNamespace,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    ckpt = build.checkpoint("imagenet-resnet-50-dag")
    assert cli.main(["inspect", str(ckpt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    fastap = next(line for line in lines if line.startswith("FastAP:"))
    # the synthetic checkpoint's opt struct (converters.fastap.synthetic) as the run wrote it
    assert fastap == ("FastAP:  checkpoint epoch 3 (from file name); run options: dataset "
                      "products, arch resnet50, dim 512, nbins 10, batchSize 256, lr 1e-05, "
                      "lrmult 10, epoch 30")
    assert cli.main(["inspect", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fastap"]["key_options"]["batchSize"] == 256
    assert report["fastap"]["options"]["solver"] == "adam"


def test_generic_networks_have_no_fastap_section() -> None:
    report = inspect_file(REALFILES / "mat" / "dagnn_v5_struct_mnist_new_net.mat")
    assert report["fastap"] is None
    assert "FastAP:" not in format_inspection(report)
