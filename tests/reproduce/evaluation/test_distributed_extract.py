"""Distributed embedding extraction on 2 CPU processes (gloo, localhost) against one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from converters.fastap.card import ModelCard
from reproduce.errors import InputError
from reproduce.evaluation.distributed import batch_shard
from reproduce.evaluation.embeddings import extract_embeddings

WORLD = 2
N, BATCH = 11, 3  # 4 batches: rank 0 takes images 0-5, rank 1 images 6-10


class NpyImages:
    """A stand-in preprocessing: the image is the array stored in the file."""

    name = "npy"

    def __call__(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(np.load(path))

    def record(self) -> dict:
        return {"name": self.name}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5))


def _images(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        p = root / f"img{i:02d}.npy"
        np.save(p, rng.standard_normal((3, 12, 12)).astype(np.float32))
        paths.append(p)
    return paths


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from reproduce.evaluation.distributed import extract_embeddings_distributed, init_from_env

    init_from_env(backend="gloo")
    paths = sorted(Path(root, "images").glob("*.npy"))
    card = ModelCard(family="test")
    out = {"plain": extract_embeddings_distributed(_model(), card, paths, NpyImages(),
                                                    batch_size=BATCH, progress=False),
           "cached": extract_embeddings_distributed(_model(), card, paths, NpyImages(),
                                                     batch_size=BATCH, progress=False,
                                                     cache_dir=Path(root, "cache"),
                                                     everywhere=True),
           # 3 images in one batch of 4: rank 1 has nothing to embed and still takes part
           "one_batch": extract_embeddings_distributed(_model(), card, paths[:3], NpyImages(),
                                                        batch_size=4, progress=False,
                                                        everywhere=True)}
    torch.save(out, Path(root) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_gather_the_single_process_features_in_order(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    paths = _images(tmp_path / "images")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    torch.set_num_threads(1)
    single = extract_embeddings(_model(), ModelCard(family="test"), paths, NpyImages(),
                                batch_size=BATCH, progress=False)
    assert single.shape == (N, 5) and single.dtype == np.float32
    assert ranks[1]["plain"] is None  # rank 0 gathers
    np.testing.assert_array_equal(ranks[0]["plain"], single)
    for r in range(WORLD):  # every rank, from its own shard's cache folder
        np.testing.assert_array_equal(ranks[r]["cached"], single)
    assert len(list((tmp_path / "cache").glob("*/features.npy"))) == WORLD
    for r in range(WORLD):
        np.testing.assert_array_equal(ranks[r]["one_batch"], single[:3])


def test_shards_are_runs_of_whole_batches() -> None:
    assert [batch_shard(11, 3, r, 2) for r in range(2)] == [slice(0, 6), slice(6, 11)]
    assert [batch_shard(10, 4, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 8),
                                                            slice(8, 10)]
    assert [batch_shard(3, 4, r, 2) for r in range(2)] == [slice(0, 3), slice(3, 3)]
    with pytest.raises(InputError, match="rank"):
        batch_shard(10, 4, 2, 2)


def _cli_worker(rank: int, port: int, argv: list[str]) -> None:
    """One rank of ``torchrun -m reproduce evaluate ...``: the environment torchrun sets."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from reproduce.cli.main import main

    status = main(argv)
    Path(argv[argv.index("--out") + 1], f"status{rank}").write_text(str(status))


def test_fastap_evaluate_under_torchrun_scores_what_one_process_scores(tmp_path, build
                                                                        ) -> None:
    from converters.fastap.card import ModelInput
    from converters.fastap.families import build_model
    from converters.fastap.model_file import save_model
    from reproduce.cli.main import main

    torch.manual_seed(0)
    card = ModelCard(family="resnet18-pt-mcn", embedding_dim=8, source_sha256="ab" * 32,
                     input=ModelInput(average_image=np.array([0.485, 0.456, 0.406],
                                                             dtype=np.float32)))
    model = save_model(tmp_path / "tiny.pt", build_model("resnet18-pt-mcn", 8), card)
    root = build.products(tmp_path / "sop", classes=3, per_class=2)
    argv = ["evaluate", "--model", str(model), "--dataset", "products", "--root", str(root),
            "--batch-size", "2", "--device", "cpu"]
    out = tmp_path / "two"
    mp.spawn(_cli_worker, args=(_free_port(), [*argv, "--out", str(out)]), nprocs=WORLD,
             join=True)
    assert [(out / f"status{r}").read_text() for r in range(WORLD)] == ["0", "0"]
    torch.set_num_threads(1)
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    two = (out / "evaluate" / "per_query_products.csv").read_text()
    one = (tmp_path / "one" / "evaluate" / "per_query_products.csv").read_text()
    assert two == one and len(one.splitlines()) == 7  # header + 6 queries
    metrics = ("R@1", "MAP@R", "R-precision")
    tables = [pd.read_csv(d / "evaluate" / "metrics.csv") for d in (out, tmp_path / "one")]
    for table in tables:
        assert set(metrics) <= set(table["metric"])
    assert [tables[0].set_index("metric").loc[m, "value"] for m in metrics] == \
        [tables[1].set_index("metric").loc[m, "value"] for m in metrics]
    # each rank cached its own shard: 3 batches of 2, rank 0 two of them, rank 1 one
    shards = sorted(np.load(f).shape[0] for f in (out / "cache").glob("embeddings/*/features.npy"))
    assert shards == [2, 4]
