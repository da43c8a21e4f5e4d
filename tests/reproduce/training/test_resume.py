"""Resume: a run killed with SIGKILL in the middle of an epoch and continued with
``--continue`` ends with exactly the parameters of an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from logs.diary_parser import parse_diaries
from reproduce.cli.main import main
from reproduce.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = "import sys; from reproduce.cli.main import main; sys.exit(main(sys.argv[1:]))"
RUN = ("--epochs", "2", "--test-interval", "1", "--batches-per-meta-pair", "2",
       "--uncompressed-export")


def _folder(out: Path) -> Path:
    return out / "train" / "products-FastAP-16-resnet18" / \
        "fastap-10bins-batch8-adam1e-05mult10-WD0e+00"


def test_sigkill_mid_epoch_then_continue_matches_an_uninterrupted_run(
        tiny: SimpleNamespace, tmp_path: Path) -> None:
    killed_out = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, "-c", LAUNCH, *tiny.args(killed_out, *RUN)],
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the victim: float sums are ordered by the thread split
    try:
        assert main(tiny.args(tmp_path / "reference", *RUN)) == 0  # meanwhile, in here
        folder = _folder(killed_out)
        diary = folder / "diary_001.txt"
        deadline = time.time() + 120
        while time.time() < deadline and victim.poll() is None:
            if diary.is_file() and "products-train ep02:   1/" in diary.read_text():
                os.kill(victim.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        assert victim.wait(60) == -signal.SIGKILL, "the run ended before it could be killed"
        assert "ep02:   2/" not in diary.read_text()  # killed inside epoch 2
        assert not (folder / "checkpoint-epoch-2.pt").exists()
        assert main(tiny.args(killed_out, *RUN, "--continue")) == 0
    finally:
        torch.set_num_threads(threads)

    ours = load_checkpoint(folder / "checkpoint-epoch-2.pt")
    theirs = load_checkpoint(_folder(tmp_path / "reference") / "checkpoint-epoch-2.pt")
    assert ours["model"].keys() == theirs["model"].keys()
    for name, value in theirs["model"].items():
        assert torch.equal(ours["model"][name], value), name
    for key, state in theirs["optimizer"]["state"].items():
        mine = ours["optimizer"]["state"][key]
        assert mine["t"] == state["t"] and torch.equal(mine["m"], state["m"]) \
            and torch.equal(mine["v"], state["v"])
    run = parse_diaries(folder)
    assert [d.path.name for d in run.diaries] == ["diary_001.txt", "diary_002.txt"]
    assert run.diaries[1].resumed_from == 1
    reference_run = parse_diaries(_folder(tmp_path / "reference"))
    assert {e: r.train_objective for e, r in run.epochs.items()} == \
        {e: r.train_objective for e, r in reference_run.epochs.items()}
