"""MAP@R + R-precision + Recall@K in one pass, against the Recall@K-only pass, at SOP size.

Data: ``N`` unit vectors (default 60,502 x 512, float32, seeded) with SOP-like labels
(11,316 classes, about 5.3 images each), query = database, own entry excluded,
Ks 1, 10, 100, 1000. Each vector is ``noise + signal * centre[label]``, normalised: with
the default ``--signal 0.45`` Recall@1 is SOP-like (printed), so that many queries have
positives within their first R candidates and the extra ranking work is representative;
``--signal 0`` gives the random vectors of ``bench_recall.py`` (almost no positive within R,
the cheapest case for the extra work).

Methods, alternated ``--repeats`` times in this process on the same data (the time of each
is the fastest of its repeats; the ratio is against the Recall@K-only time of this run):

- ``recall``: :func:`reproduce.evaluation.recall.recall_at_k` (first positive only);
- ``metrics``: :func:`reproduce.evaluation.metrics.retrieval_metrics` (Recall@K, MAP@R and
  R-precision from one pass);
- ``nmi`` (with ``--nmi``): :func:`reproduce.evaluation.metrics.nmi`, faiss k-means with
  k = the number of classes, timed once and reported apart (not part of the ratio).

Usage: ``python benchmarks/bench_metrics.py [--n 60502] [--dim 512] [--repeats 2]
[--signal 0.45] [--nmi] [--device cpu|cuda]``. Not run by CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KS = (1, 10, 100, 1000)
CLASSES_PER_IMAGE = 11316 / 60502


def make_data(n: int, dim: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around per-class centres and labels with about 5.3 images per class."""
    rng = np.random.default_rng(seed)
    classes = max(1, round(n * CLASSES_PER_IMAGE))
    y = rng.integers(0, classes, size=n)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    if signal:
        centres = rng.standard_normal((classes, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        X += np.float32(signal) * centres[y]
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def main() -> None:
    """Alternate the two passes, print times, the ratio and the metric values."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60502)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--signal", type=float, default=0.45)
    parser.add_argument("--nmi", action="store_true", help="also time NMI (faiss k-means)")
    parser.add_argument("--device", default="cpu", help="cpu (numpy pass) or cuda (torch)")
    args = parser.parse_args()

    from reproduce.evaluation.metrics import nmi, retrieval_metrics
    from reproduce.evaluation.recall import recall_at_k

    X, y = make_data(args.n, args.dim, args.signal)
    if args.device == "cpu":
        def recall_only() -> object:
            return recall_at_k(X, y, X, y, KS, remove_diag=True, progress=False)
    else:
        def recall_only() -> object:  # the torch pass always ranks within R as well
            return retrieval_metrics(X, y, X, y, KS, progress=False, device=args.device).recall
    times: dict[str, list[float]] = {"recall": [], "metrics": []}
    result = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        recall = recall_only()
        times["recall"].append(time.perf_counter() - t)
        t = time.perf_counter()
        result = retrieval_metrics(X, y, X, y, KS, progress=False, device=args.device)
        times["metrics"].append(time.perf_counter() - t)
        assert np.array_equal(result.recall.rank, recall.rank)
    best = {k: min(v) for k, v in times.items()}
    print(f"N = {args.n}, d = {args.dim}, signal = {args.signal}, Ks = {list(KS)}, "
          f"device = {args.device}, repeats = {args.repeats}")
    print("recall@K: " + ", ".join(f"{v:.4f}" for v in result.recall.recall)
          + f"; MAP@R: {result.rank.map_at_r:.4f}; R-precision: "
          f"{result.rank.mean_r_precision:.4f}; positives ranked within R: "
          f"{len(result.positives.top_ranks)}")
    for name, values in times.items():
        print(f"{name:<8} best {best[name]:8.1f} s   all: "
              + ", ".join(f"{v:.1f}" for v in values))
    print(f"metrics / recall = {best['metrics'] / best['recall']:.3f} (target <= 1.3)")
    if args.nmi:
        t = time.perf_counter()
        res = nmi(X, y)
        print(f"NMI {res.nmi:.4f} (k = {res.record['k']}) in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
