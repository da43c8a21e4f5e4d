"""``fastap logs``: files written directly into --out, formats, bad input exits 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reproduce.cli.main as cli
from logs.simulator import SimSpec, simulate_run
from reproduce.errors import InputError
from reproduce.report.log_tables import logs_command
from tests import REALFILES

REAL_LOGS = REALFILES / "logs"
REAL_CHECKPOINT = (REALFILES / "mat"
                   / "simplenn_v5_ckpt_oneclick_net-epoch-50.mat")


@pytest.fixture
def fastap(monkeypatch: pytest.MonkeyPatch):
    """``fastap`` with only this helper's subcommands (others may not exist yet)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("logs",))
    return cli.main


def test_logs_command_writes_epochs_and_runs(tmp_path: Path, fastap) -> None:
    sim = simulate_run(tmp_path / "in", SimSpec(dataset="vid", arch="resnet18", epochs=4,
                                                test_interval=2, seed=7))
    status = fastap(["logs", str(tmp_path / "in"), str(REAL_LOGS), "--out",
                     str(tmp_path / "res")])
    assert status == 0
    out = tmp_path / "res"
    assert {p.name for p in out.iterdir()} >= {"epochs.csv", "runs.csv", "unrecognised.csv",
                                               "report.txt", "run_info.json"}
    epochs = pd.read_csv(out / "epochs.csv")
    assert list(epochs.columns) == ["run", "epoch", "train_objective", "small R@1", "small R@5",
                                    "medium R@1", "medium R@5", "large R@1", "large R@5"]
    mine = epochs[epochs["run"].str.startswith("vid-FastAP-512-resnet18/simulated")]
    assert mine["epoch"].tolist() == [1, 2, 3, 4]
    assert mine["small R@1"].isna().tolist() == [False, False, True, False]
    assert mine.set_index("epoch")["large R@5"][4] == sim.recall[4]["large R@5"]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 and runs["simulated"].sum() == 1
    assert json.loads((out / "run_info.json").read_text())["command"] == "logs"
    report = (out / "report.txt").read_text()
    assert "SIMULATED" in report
    assert "log_fcnTrain_dag_issue_vlfeat-matconvnet-fcn-21.txt:1:" in report
    unrecognised = pd.read_csv(out / "unrecognised.csv")
    assert (unrecognised["line"] >= 1).all()
    # every line of the pasted logs except the beta19 file's blanks and its error trace
    # (`Error in f (line N)` and the source line MATLAB echoes under it)
    assert len(unrecognised) == 4 + 17 + 5 + 2
    messages = pd.read_csv(out / "matlab_messages.csv")
    assert "Error in cnn_train (line 127)" in messages["text"].tolist()
    assert "[net, info] = trainfn(net, imdb, getBatch(opts), ..." in messages["text"].tolist()


def test_checkpoint_stats_become_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "products-FastAP-512-resnet50" / "x-10bins-batch256-adam1e-05mult10-WD0e+00"
    folder.mkdir(parents=True)
    (folder / "net-epoch-2.mat").write_bytes(b"")
    (folder / "net-epoch-4.mat").write_bytes(b"")
    seen = []

    def fake_load(path: Path) -> dict:
        seen.append(path.name)
        return {"train": [{"objective": [[0.5]], "time": [[1.0]]}] * 4, "val": []}

    monkeypatch.setattr("reproduce.report.log_tables.load_checkpoint_stats", fake_load)
    result = logs_command([tmp_path], tmp_path / "res")
    assert seen == ["net-epoch-4.mat"]
    expected = f"products-FastAP-512-resnet50/{folder.name} [stats net-epoch-4.mat]"
    assert result.stats_runs == [expected]
    assert pd.read_csv(tmp_path / "res" / "epochs.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_missing_path_exits_2(tmp_path: Path, fastap, capsys) -> None:
    assert fastap(["logs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err


def test_binary_diary_exits_2(tmp_path: Path, fastap, capsys) -> None:
    (tmp_path / "diary_001.txt").write_bytes(b"\x00\x01binary")
    assert fastap(["logs", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "diary_001.txt" in capsys.readouterr().err


def test_real_checkpoint_stats_through_the_mat_reader(tmp_path: Path) -> None:
    """A real cnn_train checkpoint (50 epochs of stats) read with converters.matio.read."""
    folder = tmp_path / "exp"
    folder.mkdir()
    shutil.copyfile(REAL_CHECKPOINT, folder / "net-epoch-50.mat")
    result = logs_command([folder / "net-epoch-50.mat"], tmp_path / "res")
    epochs = pd.read_csv(tmp_path / "res" / "epochs.csv")
    assert list(epochs.columns) == ["run", "epoch", "train_objective"]
    assert epochs["epoch"].tolist() == list(range(1, 51))
    assert epochs["run"].unique().tolist() == result.stats_runs
    # stats.train(1) and stats.train(50).objective of that file (single precision), as
    # scipy.io.loadmat reads them
    assert epochs["train_objective"].iloc[0] == pytest.approx(4.0976424, rel=1e-7)
    assert epochs["train_objective"].iloc[49] == pytest.approx(0.02820707, rel=1e-6)


def test_failing_command_leaves_nothing_behind(tmp_path: Path, fastap, capsys) -> None:
    (tmp_path / "adir.mat").mkdir()
    out = tmp_path / "X"
    assert fastap(["logs", str(tmp_path / "adir.mat"), "--out", str(out)]) == 2
    assert "adir.mat" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    assert fastap(["logs", str(tmp_path / "adir.mat"), "--out", str(out)]) == 2
    assert list(out.iterdir()) == []


def test_foreign_text_files_only_are_an_error(tmp_path: Path, fastap, capsys) -> None:
    (tmp_path / "logs").mkdir()
    shutil.copyfile(REAL_LOGS / "log_fcnTrain_dag_issue_vlfeat-matconvnet-fcn-21.txt",
                    tmp_path / "logs" / "train.log.txt")
    assert fastap(["logs", str(tmp_path / "logs"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no FastAP diary" in err and "train.log.txt" in err
    assert not (tmp_path / "o").exists()


def _stats_checkpoint(path: Path) -> Path:
    """A small MAT v7 file laid out like a checkpoint: ``net``, then ``stats``."""
    from converters.matio.write import save_mat

    path.parent.mkdir(parents=True, exist_ok=True)
    stats = {"train": [{"objective": np.array([[0.5]]), "time": np.array([[1.0]])}] * 7}
    return save_mat(path, {"net": {"params": np.zeros((200, 200))}, "stats": stats},
                    compress=False)


def test_truncated_checkpoint_is_named_and_the_good_run_kept(tmp_path: Path, fastap,
                                                             capsys) -> None:
    simulate_run(tmp_path / "good", SimSpec(epochs=2, test_interval=2, seed=4))
    bad = _stats_checkpoint(tmp_path / "bad" / "exp" / "net-epoch-7.mat")
    raw = bad.read_bytes()
    bad.write_bytes(raw[:len(raw) // 2])
    status = fastap(["logs", str(tmp_path / "good"), str(tmp_path / "bad"), "--out",
                     str(tmp_path / "o")])
    assert status == 1
    err = capsys.readouterr().err
    assert "net-epoch-7.mat: truncated MAT file" in err and "no 'stats'" not in err
    epochs = pd.read_csv(tmp_path / "o" / "epochs.csv")
    assert epochs["run"].str.contains("simulated").all() and epochs["epoch"].tolist() == [1, 2]
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "files not read: 1" in report and "net-epoch-7.mat: truncated" in report


def test_intact_checkpoint_without_stats_says_so(tmp_path: Path) -> None:
    from converters.matio.integrity import mat_v5_truncation
    from converters.matio.write import save_mat
    from reproduce.report.log_tables import load_checkpoint_stats

    path = save_mat(tmp_path / "net-epoch-1.mat", {"net": {"params": np.zeros((3, 3))}})
    assert mat_v5_truncation(path) is None
    with pytest.raises(InputError, match="no 'stats' variable"):
        load_checkpoint_stats(path)
    whole = _stats_checkpoint(tmp_path / "whole" / "net-epoch-7.mat")
    assert mat_v5_truncation(whole) is None
    assert len(load_checkpoint_stats(whole)["train"]) == 7


def test_counts_stay_integers_beside_empty_cells(tmp_path: Path) -> None:
    simulate_run(tmp_path / "in", SimSpec(epochs=2, test_interval=2, seed=4))
    logs_command([tmp_path / "in", REAL_LOGS], tmp_path / "res")  # pasted logs: no `completed`
    runs = pd.read_csv(tmp_path / "res" / "runs.csv", dtype=str)
    assert sorted(runs["completed"].dropna()) == ["2"] and runs["completed"].isna().sum() == 4
    assert set(runs["last_epoch"].dropna()) == {"2"}
    details = pd.read_csv(tmp_path / "res" / "epoch_details.csv", dtype=str)
    assert details["batch_size"].tolist() == ["256", "256"]


def test_binary_diary_beside_a_good_run_is_reported_not_fatal(tmp_path: Path, fastap,
                                                              capsys) -> None:
    simulate_run(tmp_path / "good", SimSpec(epochs=2, test_interval=2, seed=4))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "diary_001.txt").write_bytes(b"processEpoch: x\n\x00\x01")
    assert fastap(["logs", str(tmp_path / "good"), str(tmp_path / "bad"), "--out",
                   str(tmp_path / "o")]) == 1
    assert "bad/diary_001.txt: binary file (NUL byte at offset 16)" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "o" / "epochs.csv")["epoch"].tolist() == [1, 2]
