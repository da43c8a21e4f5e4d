#!/usr/bin/env bash
# Every CUDA test, the loss, metrics and evaluation benchmarks, then a few training steps
# (plain and staged) and, with two GPUs, a 2-GPU distributed step through torchrun; under 5
# minutes on one recent GPU (each step has a timeout; together 295 s). Run from anywhere:
# benchmarks/gpu_check.sh
# PYTHON selects the interpreter (default: python on PATH); the project and its test and
# bench extras (pytest, pytorch-metric-learning, faiss-cpu, scikit-learn) must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA tests"
# -rs lists skips: with a device present, none of the cuda tests should be skipped
timeout 120 "$PY" -m pytest -q -m cuda -rs tests

echo "== FastAP loss forward + backward (benchmarks/bench_fastap.py)"
timeout 35 "$PY" benchmarks/bench_fastap.py --device cuda --sizes 1024 4096 --no-memory

echo "== Recall@K / MAP@R / R-precision at SOP size (benchmarks/bench_metrics.py)"
timeout 45 "$PY" benchmarks/bench_metrics.py --device cuda --repeats 3

echo "== Evaluation: extraction + metrics (benchmarks/bench_evaluate.py)"
timeout 45 "$PY" benchmarks/bench_evaluate.py --device cuda --images 1024 --batch-size 128 \
    --workers 8

# The training checks below are Python run from a temporary folder (torchrun needs a file).
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One model for both checks: benchmarks/bench_training.py's resnet18 + fc 128 + L2 norm with
# MatConvNet BatchNorm, at 64 x 64 pixels, M = 64 (16 classes of 4), staged chunks of 32.
cat > "$TMP/common.py" <<'PY'
import sys, time
import torch
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_training import batch, build
torch.backends.cudnn.allow_tf32 = False  # full float32, so that runs can be compared
torch.backends.cuda.matmul.allow_tf32 = False
M, SIZE, CHUNK = 64, 64, 32

def cuda_step(mode, step_class=None, **kw):
    """build()'s step, model and optimizer moved to the current GPU (optionally another
    step class on the same model and optimizer)."""
    step, model, opt = build(max_gpu_imgs=CHUNK if mode == "staged" else M, mode=mode)
    model.cuda()
    if step_class is not None:
        step = step_class(model, opt, max_gpu_imgs=step.max_gpu_imgs, mode=mode, **kw)
    return step, model, opt

def timed(step, images, labels, n):
    """Median seconds of n steps after one warm-up step."""
    step(images, labels)
    times = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        result = step(images, labels)
        torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    assert result.objective == result.objective, "objective is NaN"
    return sorted(times)[n // 2], result
PY

echo "== Training steps on CUDA: plain and staged (resnet18, 64 px, M 64, chunks 32)"
cat > "$TMP/train_cuda.py" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from common import M, batch, cuda_step, timed, SIZE
import torch
images, labels = batch(M, SIZE)
images = images.cuda()
for mode in ("plain", "staged"):
    step, model, opt = cuda_step(mode)
    seconds, result = timed(step, images, labels, 5)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert finite, f"{mode}: non-finite parameters"
    print(f"{mode:7s} {seconds * 1e3:8.1f} ms/step  {M / seconds:8.0f} img/s  "
          f"updates/step {result.n_updates}  objective {result.objective:.4f}")
print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
PY
timeout 20 "$PY" "$TMP/train_cuda.py" "$PWD" "$TMP"

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
    echo "== 2-GPU distributed step through torchrun (nccl), against one GPU"
    cat > "$TMP/train_ddp.py" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from common import M, batch, cuda_step, timed, SIZE
import torch
from reproduce.training.distributed import DistributedTrainStep, init_from_env, replicas_equal
from reproduce.training.step import TrainStep
ctx = init_from_env()
images, labels = batch(M, SIZE)
images = images.cuda()
for mode in ("plain", "staged"):
    # derivatives of one step: 2 GPUs (summed over the ranks) against this GPU alone
    ddp, model, _ = cuda_step(mode, DistributedTrainStep)
    one, model1, _ = cuda_step(mode, TrainStep)
    ddp(images, labels)
    one(images, labels)
    worst = max(float((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-30))
                for p, q in zip(model.parameters(), model1.parameters()) if q.grad is not None)
    same = replicas_equal(model)
    seconds, _ = timed(ddp, images, labels, 3)
    if ctx.rank == 0:
        print(f"{mode:7s} 2 GPUs {seconds * 1e3:8.1f} ms/step  {M / seconds:8.0f} img/s  "
              f"last derivatives vs 1 GPU: max rel {worst:.1e}  replicas equal: {same}")
    assert same, "the ranks' parameters differ"
    # float32 sums in another order (per rank, then across ranks), as the float32 CPU
    # runs measure (below 1e-6 there); 1e-4 catches a wrong divisor or unsynced BatchNorm
    assert worst < 1e-4, f"{mode}: 2-GPU derivatives differ from 1 GPU by {worst:.1e}"
torch.distributed.destroy_process_group()
PY
    timeout 30 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
        "$TMP/train_ddp.py" "$PWD" "$TMP"
else
    echo "== 2-GPU distributed step: skipped ($NGPU GPU)"
fi
