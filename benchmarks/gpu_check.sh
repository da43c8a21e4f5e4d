#!/usr/bin/env bash
# Every CUDA test, then the loss, metrics and evaluation benchmarks on the GPU; under 5
# minutes on one recent GPU (each step has a timeout; together 290 s). Run from anywhere:
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
timeout 150 "$PY" -m pytest -q -m cuda -rs tests

echo "== FastAP loss forward + backward (benchmarks/bench_fastap.py)"
timeout 40 "$PY" benchmarks/bench_fastap.py --device cuda --sizes 1024 4096 --no-memory

echo "== Recall@K / MAP@R / R-precision at SOP size (benchmarks/bench_metrics.py)"
timeout 50 "$PY" benchmarks/bench_metrics.py --device cuda --repeats 3

echo "== Evaluation: extraction + metrics (benchmarks/bench_evaluate.py)"
timeout 50 "$PY" benchmarks/bench_evaluate.py --device cuda --images 1024 --batch-size 128 \
    --workers 8
