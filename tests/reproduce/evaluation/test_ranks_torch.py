"""The torch (device) ranking pass gives the numpy pass's ranks, run here on the CPU with tiny
chunks; on a CUDA device (tests marked ``cuda``) at SOP size within 8 GB."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reproduce.evaluation.metrics import retrieval_metrics
from reproduce.evaluation.ranks_torch import positive_ranks_torch
from reproduce.evaluation.recall import PositiveRanks, positive_ranks


def _dyadic(rng: np.random.Generator, n: int, d: int, dtype=np.float32) -> np.ndarray:
    """Entries in {-1/4, 0, 1/4, 1/2}: every product and sum is exact in float32, so any
    BLAS gives bit-identical distances, with many exact ties between them."""
    return (rng.integers(-1, 3, size=(n, d)) / 4).astype(dtype)


def _same(a: PositiveRanks, b: PositiveRanks) -> None:
    np.testing.assert_array_equal(a.first, b.first)
    np.testing.assert_array_equal(a.num_relevant, b.num_relevant)
    np.testing.assert_array_equal(a.top_ptr, b.top_ptr)
    np.testing.assert_array_equal(a.top_ranks, b.top_ranks)


@pytest.mark.parametrize("remove_diag", [True, False])
def test_torch_pass_on_cpu_with_tiny_chunks_matches_numpy(remove_diag: bool) -> None:
    rng = np.random.default_rng(0)
    X = _dyadic(rng, 90, 5)
    X[7] = np.nan  # NaN distances rank last, the own entry ahead of them
    y = rng.integers(0, 12, size=90)
    ours = positive_ranks(X, y, X, y, remove_diag, chunk_bytes=90 * 4 * 4, progress=False)
    # 3 rows per chunk, one gathered row per batch: every boundary is exercised
    theirs = positive_ranks_torch(X, y, X, y, remove_diag, "cpu", chunk_bytes=90 * 4 * 3,
                                  progress=False)
    _same(ours, theirs)
    assert len(ours.top_ranks) > 30 and (ours.first[y == y[7]] >= 0).all()


def test_torch_pass_separate_queries_float64_and_absent_labels() -> None:
    rng = np.random.default_rng(1)
    Xdb = _dyadic(rng, 70, 4, np.float64)
    Xq = _dyadic(rng, 25, 4, np.float64)
    ydb = rng.integers(0, 10, size=70)
    yq = np.concatenate([rng.integers(0, 10, size=22), [40, 41, 42]])
    ours = positive_ranks(Xq, yq, Xdb, ydb, False, progress=False)
    theirs = positive_ranks_torch(Xq, yq, Xdb, ydb, False, "cpu", chunk_bytes=70 * 8 * 2,
                                  progress=False)
    _same(ours, theirs)
    assert (theirs.num_relevant[-3:] == 0).all()


def test_retrieval_metrics_device_argument_routes_to_torch() -> None:
    rng = np.random.default_rng(2)
    X = _dyadic(rng, 60, 6)
    y = rng.integers(0, 8, size=60)
    cpu = retrieval_metrics(X, y, X, y, [1, 5], progress=False)
    torch_cpu = retrieval_metrics(X, y, X, y, [1, 5], progress=False, device="cpu:0",
                                  chunk_bytes=60 * 4 * 7)
    np.testing.assert_array_equal(cpu.recall.recallrate, torch_cpu.recall.recallrate)
    assert cpu.rank.map_at_r == torch_cpu.rank.map_at_r
    assert cpu.rank.mean_r_precision == torch_cpu.rank.mean_r_precision


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sop_size_identical_ranks_within_8_gb() -> None:
    rng = np.random.default_rng(3)
    n = 60502
    X = _dyadic(rng, n, 512)
    y = rng.integers(0, 11316, size=n)
    torch.cuda.reset_peak_memory_stats()
    gpu = positive_ranks_torch(X, y, X, y, True, "cuda", progress=False)
    peak = torch.cuda.max_memory_allocated()
    assert peak < 8 * 2**30, f"peak device memory {peak / 2**30:.2f} GiB"
    _same(positive_ranks(X, y, X, y, True, progress=False), gpu)


def test_full_precision_matmul_switches_tf32_off_and_restores() -> None:
    from reproduce.evaluation.ranks_torch import full_precision_matmul

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        with full_precision_matmul():
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
