"""Converting a full-size ResNet-50 FastAP checkpoint that also holds the Adam state.

Writes a synthetic ``net-epoch-30.mat`` (Caffe ResNet-50 family by default, D = 512, with
``state.solverState``: about 300 MB on disk) as MAT v7 and v7.3, both compressed as MATLAB
writes them, then converts each in a fresh child process (``read_network`` + ``convert_network``
+ ``save_model``), measuring its wall time (per phase and whole process) and its peak
resident memory (``ru_maxrss`` of the child). Targets (issue 3): <= 15 s and <= 2 GB.

Anchors, measured in the same run: ``hash`` (SHA-256 over the checkpoint, i.e. one pass of
reading the file) and ``startup`` (a child that only imports the converters and builds an
empty torchvision resnet50). Ratios: conversion time / anchor.

    python benchmarks/bench_convert.py [--family imagenet-resnet-50-dag] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_CONVERT = """
import json, resource, sys, time
t0 = time.perf_counter()
from converters.fastap.convert import convert_network
from converters.fastap.model_file import save_model
from converters.mcn.reader import read_network
t1 = time.perf_counter()
net = read_network(sys.argv[1])
t2 = time.perf_counter()
model, card = convert_network(net)
t3 = time.perf_counter()
save_model(sys.argv[2], model, card)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "convert_s": t3 - t2,
                  "save_s": t4 - t3, "total_s": t4 - t1,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD_STARTUP = """
import json, resource, time
t0 = time.perf_counter()
import converters.fastap.convert
from converters.fastap.families import build_trunk
build_trunk("imagenet-resnet-50-dag")
print(json.dumps({"total_s": time.perf_counter() - t0,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; its JSON result plus the process wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def _sha256_seconds(path: Path) -> float:
    """Seconds for one SHA-256 pass over ``path`` (the read-the-file anchor)."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return time.perf_counter() - start


def main() -> int:
    """Write both checkpoints, convert each in a child, print times, memory and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="imagenet-resnet-50-dag")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--keep", help="folder to keep the checkpoints in (default: temporary)")
    args = parser.parse_args()

    from converters.fastap.synthetic import write_synthetic_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        startup = _child(CHILD_STARTUP)
        print(f"anchor startup: {startup['total_s']:.2f} s in process "
              f"({startup['process_s']:.2f} s with interpreter), "
              f"peak {startup['maxrss_mb']:.0f} MB")
        for version in ("7", "7.3"):
            ckpt = folder / f"v{version}" / "net-epoch-30.mat"
            if not ckpt.exists():
                start = time.perf_counter()
                write_synthetic_checkpoint(ckpt, args.family, dim=args.dim, epoch=30,
                                           with_state=True, version=version)
                print(f"wrote {ckpt} in {time.perf_counter() - start:.1f} s")
            size_mb = ckpt.stat().st_size / 2**20
            hash_s = _sha256_seconds(ckpt)
            result = _child(CHILD_CONVERT, str(ckpt), str(ckpt.with_suffix(".pt")))
            verdict = ("OK" if result["total_s"] <= 15 and result["maxrss_mb"] <= 2048
                       else "OVER TARGET")
            print(f"v{version}: {size_mb:.0f} MB on disk; read {result['read_s']:.2f} s, "
                  f"convert {result['convert_s']:.2f} s, save {result['save_s']:.2f} s, "
                  f"total {result['total_s']:.2f} s (process {result['process_s']:.2f} s, "
                  f"imports {result['import_s']:.2f} s); peak {result['maxrss_mb']:.0f} MB "
                  f"[{verdict}: <= 15 s, <= 2048 MB]")
            print(f"  ratios: total / hash anchor ({hash_s:.2f} s) = "
                  f"{result['total_s'] / hash_s:.1f}; process / startup anchor = "
                  f"{result['process_s'] / startup['process_s']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
