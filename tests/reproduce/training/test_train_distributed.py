"""``fastap train`` under a torchrun-style launch: 2 CPU processes (gloo) train the same run
as one process, to float32 rounding, and only rank 0 writes the run's files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from logs.diary_parser import parse_diaries
from reproduce.cli.main import main
from reproduce.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = "import sys; from reproduce.cli.main import main; sys.exit(main(sys.argv[1:]))"
RUN = ("--epochs", "1", "--test-interval", "1", "--batches-per-meta-pair", "1",
       "--uncompressed-export")
LR = 1e-5  # the authors' default, and 10x on fc


def _folder(out: Path) -> Path:
    return out / "train" / "products-FastAP-16-resnet18" / \
        "fastap-10bins-batch8-adam1e-05mult10-WD0e+00"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_train_what_one_process_trains(tiny: SimpleNamespace, tmp_path: Path
                                                 ) -> None:
    assert main(tiny.args(tmp_path / "one", *RUN)) == 0
    port = str(_free_port())
    ranks = [subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *tiny.args(tmp_path / "two", *RUN)], cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(r), "LOCAL_RANK": str(r),
             "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=300) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outputs
    assert "trained" in outputs[0][0] and outputs[1][0] == ""  # rank 0 reports

    one = load_checkpoint(_folder(tmp_path / "one") / "checkpoint-epoch-1.pt")
    two = load_checkpoint(_folder(tmp_path / "two") / "checkpoint-epoch-1.pt")
    steps = max(int(s["t"]) for s in one["optimizer"]["state"].values())
    assert steps == max(int(s["t"]) for s in two["optimizer"]["state"].values()) >= 1
    for name, value in one["model"].items():
        other = two["model"][name]
        if not value.is_floating_point():
            assert torch.equal(value, other), name
            continue
        # Adam moves a weight by at most about lr per step whatever its gradient, so a
        # gradient that differs only by summation order (ranks, then across ranks) can move
        # a weight whose gradient is near zero the other way: bound by 2 lr per step (x10 on
        # fc); moments and values untouched by Adam agree to float32 rounding
        bound = 2 * LR * (10 if name.startswith("fc.") else 1) * steps
        assert float((value - other).abs().max()) <= bound + 1e-5 * float(value.abs().max()), name
    # one diary, written by rank 0; its epoch line as one process's (to %g rounding)
    assert sorted(p.name for p in _folder(tmp_path / "two").glob("diary_*.txt")) == \
        ["diary_001.txt"]
    ours = parse_diaries(_folder(tmp_path / "two")).epochs[1].train_objective
    theirs = parse_diaries(_folder(tmp_path / "one")).epochs[1].train_objective
    assert ours == pytest.approx(theirs, abs=2e-3)
