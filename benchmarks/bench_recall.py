"""Recall@K at SOP test size: our MATLAB-semantics counting vs faiss and argpartition.

Data: ``N`` random unit vectors (default 60,502 x 512, float32, seeded) with SOP-like labels
(11,316 classes), query = database, self excluded; Ks 1, 10, 100, 1000. Each method runs in
its own child process, which regenerates the same data, times only the recall computation
and reports its peak resident memory (``ru_maxrss``) and the memory held by the data alone.

- ``ours``: :func:`reproduce.evaluation.recall.recall_at_k` (chunked ``2 - 2 Xq Xdb'``, rank of the
  first positive per query: every K at once; exact MATLAB ties);
- ``faiss``: ``IndexFlatIP`` exact search with k = 1001 (self is removed from the results),
  then Recall@K from the neighbour labels (needs ``pip install faiss-cpu``; skipped if absent);
- ``argpartition``: the same chunked distances, ``np.argpartition`` for the 1000 nearest,
  sorted, then Recall@K.

Usage: ``python benchmarks/bench_recall.py [--n 60502] [--dim 512]``. Prints the times, the
ratios to faiss and the peak memory; not run by CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

KS = (1, 10, 100, 1000)
CLASSES_PER_IMAGE = 11316 / 60502


def make_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors and labels with about 5.3 images per class."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    classes = max(1, round(n * CLASSES_PER_IMAGE))
    y = rng.integers(0, classes, size=n)
    return X, y


def peak_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(X: np.ndarray, y: np.ndarray) -> list[float]:
    """Our evaluate_model.m Recall@K."""
    from reproduce.evaluation.recall import recall_at_k

    return recall_at_k(X, y, X, y, KS, remove_diag=True, progress=False).recall.tolist()


def _recall_from_neighbours(nbr: np.ndarray, y: np.ndarray) -> list[float]:
    """Recall@K from a Nq x kmax neighbour index matrix (self already removed)."""
    hits = y[nbr] == y[:, None]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), nbr.shape[1])
    return [float(np.mean(first < k)) for k in KS]


def run_faiss(X: np.ndarray, y: np.ndarray) -> list[float]:
    """faiss exact inner-product search, k = 1001, self dropped."""
    import faiss

    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    _, nbr = index.search(X, max(KS) + 1)
    n = len(X)
    not_self = nbr != np.arange(n)[:, None]
    # keep the first 1000 non-self neighbours of each row
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :max(KS)]
    nbr = np.take_along_axis(nbr, order, axis=1)
    return _recall_from_neighbours(nbr, y)


def run_argpartition(X: np.ndarray, y: np.ndarray, chunk: int = 1024) -> list[float]:
    """Chunked distances, argpartition for the 1000 nearest, sort them, Recall@K."""
    n = len(X)
    kmax = max(KS)
    out = np.empty((n, kmax), dtype=np.int64)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        D = 2 - 2 * (X[a:b] @ X.T)
        D[np.arange(b - a), np.arange(a, b)] = np.inf
        part = np.argpartition(D, kmax - 1, axis=1)[:, :kmax]
        d = np.take_along_axis(D, part, axis=1)
        order = np.argsort(d, axis=1, kind="stable")
        out[a:b] = np.take_along_axis(part, order, axis=1)
    return _recall_from_neighbours(out, y)


METHODS = {"ours": run_ours, "faiss": run_faiss, "argpartition": run_argpartition}


def child(method: str, n: int, dim: int) -> None:
    """Run one method and print a JSON line with its time, recall and memory.

    ``data_mb`` is the peak after importing the method's libraries and making the data: the
    part of ``peak_mb`` that is not the method's own working memory.
    """
    if method == "ours":
        import reproduce.evaluation.recall  # noqa: F401
    elif method == "faiss":
        import faiss  # noqa: F401
    X, y = make_data(n, dim)
    data_mb = peak_mb()
    t = time.perf_counter()
    recall = METHODS[method](X, y)
    seconds = time.perf_counter() - t
    print(json.dumps({"method": method, "seconds": seconds, "recall": recall,
                      "peak_mb": peak_mb(), "data_mb": data_mb}))


def main() -> None:
    """Run every method in a child process and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60502)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--child", choices=sorted(METHODS))
    parser.add_argument("--methods", default="ours,faiss,argpartition")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.dim)
        return
    results = {}
    for method in args.methods.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", method, "--n", str(args.n),
                               "--dim", str(args.dim)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{method}: failed (skipped)\n{proc.stderr.strip().splitlines()[-1:]}")
            continue
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"N = {args.n}, d = {args.dim}, Ks = {list(KS)}, query = database, self excluded")
    print(f"{'method':<14}{'seconds':>9}{'vs faiss':>10}{'peak MiB':>10}{'data MiB':>10}  recall")
    anchor = results.get("faiss", {}).get("seconds")
    for name, r in results.items():
        ratio = f"{r['seconds'] / anchor:.2f}" if anchor else "n/a"
        rec = ", ".join(f"{v:.4f}" for v in r["recall"])
        print(f"{name:<14}{r['seconds']:>9.1f}{ratio:>10}{r['peak_mb']:>10.0f}"
              f"{r['data_mb']:>10.0f}  {rec}")


if __name__ == "__main__":
    main()
