"""Evaluation throughput: embedding extraction and the metrics search, on a chosen device.

A random-weight ResNet-50 FastAP model (512-d, as the released SOP models) embeds ``--images``
synthetic 320x240 JPEGs (written to a temporary folder, seeded) through the ``matlab``
preprocessing (256x256 pre-resize, JPEG re-encode, 224x224), ``--workers`` DataLoader
processes, no cache; then Recall@K, MAP@R and R-precision of the embeddings (query =
database) with 4 images per class. Prints images per second and the seconds of each stage.

Usage: ``python benchmarks/bench_evaluate.py [--images 512] [--batch-size 64]
[--workers 4] [--device cpu|cuda]``. Not run by CI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` random-noise JPEGs of 320x240."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def main() -> None:
    """Time extraction and search once each (after a small warm-up batch)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from converters.fastap.families import FAMILY_RESNET50_PT, build_model
    from reproduce.evaluation.embeddings import extract_embeddings
    from reproduce.evaluation.metrics import retrieval_metrics
    from reproduce.evaluation.preprocess import make_preprocessing

    torch.manual_seed(0)
    model = build_model(FAMILY_RESNET50_PT, 512)
    card = {"family": FAMILY_RESNET50_PT, "source_sha256": "0" * 64}
    pre = make_preprocessing("matlab", average_image=np.array([123.7, 116.3, 103.5]),
                             pre_resize=(256, 256))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        extract_embeddings(model, card, paths[:args.batch_size], pre, args.batch_size,
                           args.workers, progress=False, device=args.device)  # warm-up
        t = time.perf_counter()
        feats = extract_embeddings(model, card, paths, pre, args.batch_size, args.workers,
                                   progress=False, device=args.device)
        extract_s = time.perf_counter() - t
    labels = np.arange(len(feats)) // 4
    t = time.perf_counter()
    res = retrieval_metrics(feats, labels, feats, labels, [1, 10], progress=False,
                            device=args.device)
    search_s = time.perf_counter() - t
    print(f"device {args.device}, {args.images} images, batch {args.batch_size}, "
          f"{args.workers} workers, torch {torch.__version__}")
    print(f"extraction {extract_s:.1f} s ({args.images / extract_s:.1f} images/s); "
          f"metrics {search_s:.2f} s (R@1 {res.recall.recall[0]:.3f}, MAP@R "
          f"{res.rank.map_at_r:.3f} on random weights)")


if __name__ == "__main__":
    main()
