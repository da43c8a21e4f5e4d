"""The distributed step on 2 CPU processes (gloo, localhost) against one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.multiprocessing as mp

from reproduce import paths
from reproduce.errors import InputError
from reproduce.parity.training_step import StepNet, fixture_net
from reproduce.training.batchnorm import McnBatchNorm2d
from reproduce.training.optimizer import McnAdam
from reproduce.training.step import TrainStep

FIXTURE = paths.FIXTURES / "training_matlab" / "step_staged_m12_g5_exact.mat"
WORLD = 2
#: (case, TrainStep options): plain over all 12 images, staged in chunks of 5, 5, 2, and
#: plain with each rank's BatchNorm left on its own half (the control that must differ)
CASES = {"plain": {"mode": "plain"}, "staged": {"mode": "staged", "max_gpu_imgs": 5},
         "accumulate": {"mode": "accumulate", "max_gpu_imgs": 5},
         "unsynced": {"mode": "plain"}}
#: float64 model: the two runs add the same terms in another order (per rank, then across
#: ranks) in BatchNorm's sums and the parameter derivatives, a few units of 2^-53 each,
#: amplified by BatchNorm's 1/sigma. Compared as the parity rows are, per tensor: the largest
#: difference over the largest magnitude; measured up to 1.3e-15 (accumulate), so 1e-14
#: (90 u) leaves room for another BLAS while a wrong divisor or statistic fails by 1e-3
TOLERANCE = 1e-14


def _tiny() -> tuple[StepNet, torch.Tensor, torch.Tensor]:
    """The step fixture's tiny DagNN (float64) with its first 12 images and labels."""
    mat = scipy.io.loadmat(FIXTURE)
    model = StepNet(fixture_net(mat), dtype=torch.float64)
    images = torch.from_numpy(np.ascontiguousarray(mat["images"].transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(mat["labels"][:, 0].astype(np.float64))
    return model, images[:12].to(torch.float64), labels[:12]


def _optimizer(model: torch.nn.Module) -> McnAdam:
    return McnAdam(list(model.parameters()), lr=1e-3, weight_decay=5e-4)


def _state(model, opt, result) -> dict:
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()},
            "t": sorted({s["t"] for s in opt.state.values()}),
            "objective": result.objective, "n_updates": result.n_updates}


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: every case on the full batch (each rank takes its part), states saved."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from reproduce.training.distributed import (
        DistributedTrainStep,
        init_from_env,
        replicas_equal,
    )
    ctx = init_from_env(backend="gloo")
    states = {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend}
    for case, options in CASES.items():
        model, images, labels = _tiny()
        opt = _optimizer(model)
        step = DistributedTrainStep(model, opt, gradient_dtype=torch.float64, **options)
        if case == "unsynced":
            for m in model.modules():
                if isinstance(m, McnBatchNorm2d):
                    m.__class__ = McnBatchNorm2d
        states["positions_" + case] = step.local_positions(12).tolist()
        if case == "staged":  # this rank's images only, in local_positions order
            images = images[step.local_positions(12)]
        result = step(images, labels)
        states[case] = _state(model, opt, result)
        states[case]["replicas_equal"] = replicas_equal(model)
    model, images, labels = _tiny()
    errors = []
    for options, batch in (({"mode": "staged", "max_gpu_imgs": 11}, images),  # chunk of 1
                           ({"mode": "plain"}, images[:5])):  # neither 12 nor this rank's 6
        step = DistributedTrainStep(model, _optimizer(model), **options)
        try:
            step(batch, labels)
        except InputError as exc:
            errors.append(str(exc))
    states["errors"] = errors
    torch.save(states, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _single(case: str) -> dict:
    model, images, labels = _tiny()
    opt = _optimizer(model)
    options = {k: v for k, v in CASES[case].items()}
    result = TrainStep(model, opt, gradient_dtype=torch.float64, **options)(images, labels)
    return _state(model, opt, result)


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-300))
               for n in b)


def test_ranks_split_every_unit_and_stay_identical(ranks) -> None:
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["backend"] == "gloo"
    assert ranks[0]["positions_plain"] == list(range(6))
    assert ranks[1]["positions_plain"] == list(range(6, 12))
    # chunks 0:5, 5:10, 10:12, each cut in two (the larger part first)
    assert ranks[0]["positions_staged"] == [0, 1, 2, 5, 6, 7, 10]
    assert ranks[1]["positions_staged"] == [3, 4, 8, 9, 11]
    for case in ("plain", "staged", "accumulate"):
        assert ranks[0][case]["replicas_equal"] and ranks[1][case]["replicas_equal"]
        for name, p in ranks[0][case]["params"].items():
            assert torch.equal(p, ranks[1][case]["params"][name])


@pytest.mark.parametrize("case", ["plain", "staged", "accumulate"])
def test_two_ranks_equal_one_process_to_rounding(ranks, case) -> None:
    single, dist = _single(case), ranks[0][case]
    assert dist["t"] == single["t"] == ([3] if case == "staged" else [1])
    assert dist["n_updates"] == single["n_updates"]
    assert dist["objective"] == pytest.approx(single["objective"], rel=1e-12)
    assert _max_rel(dist["params"], single["params"]) < TOLERANCE
    # BatchNorm moments: the statistics of the whole unit, not of a rank's part
    assert _max_rel(dist["buffers"], single["buffers"]) < TOLERANCE
    start = {n: p.detach() for n, p in _tiny()[0].named_parameters()}
    changed = _max_rel(single["params"], start)
    assert changed > 1e-6  # the step did move the weights


def test_units_too_small_and_wrong_image_counts_are_errors(ranks) -> None:
    for r in ranks:
        assert len(r["errors"]) == 2
        assert "unit of 1 images" in r["errors"][0] and "maxGpuImgs" in r["errors"][0]
        assert "full batch of 12 images or its 6, got 5" in r["errors"][1]


def test_without_synchronised_batchnorm_the_result_differs(ranks) -> None:
    single, unsynced = _single("plain"), ranks[0]["unsynced"]
    assert not unsynced["replicas_equal"]  # each rank's moments from its own half
    assert _max_rel(unsynced["buffers"], single["buffers"]) > 1e-3
    assert _max_rel(unsynced["params"], single["params"]) > 1e-6


def test_rank_slice_and_errors(monkeypatch) -> None:
    from reproduce.training.distributed import rank_slice

    assert [rank_slice(10, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 7),
                                                        slice(7, 10)]
    assert [rank_slice(2, r, 4) for r in range(4)] == [slice(0, 1), slice(1, 2), slice(2, 2),
                                                       slice(2, 2)]
    with pytest.raises(InputError, match="rank"):
        rank_slice(10, 3, 3)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    from reproduce.training.distributed import init_from_env
    with pytest.raises(InputError, match="torchrun"):
        init_from_env()
