"""FastAP forward + backward: our loss against pytorch-metric-learning, a literal port of
the MATLAB layer, and the floor of two ``N x N x D`` matrix products, all in one run.

    python benchmarks/bench_fastap.py [--sizes 128 256 ...] [--dim 512] [--bins 10]
                                      [--device cpu|cuda]

Time: fastest of repeated forward+backward calls after one warm-up, methods interleaved
per size. Peak memory: each (method, N) runs once in a fresh subprocess; the peak resident set
is reset just before the call (``/proc/self/clear_refs``) and read after it (``VmHWM``), and
the increase is reported in MiB and in ``N x N`` float32 buffers (``4 N^2`` bytes).
Requires ``pip install pytorch-metric-learning`` (benchmark-only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.functional import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reproduce.loss.fastap_loss import FastAPLoss  # noqa: E402

SIZES = (128, 256, 512, 1024, 2048, 4096)
PER_CLASS = 4  # samples per class in a batch
PORT_MAX_N = 1024  # the literal port is O(L N^3): 2048 would take minutes per call here
PML_MAX_N = 2048  # pml holds ~6 L x N x N tensors: > 4 GiB and minutes at N = 4096


def make_batch(n: int, dim: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """L2-normalised float32 embeddings and labels with ``PER_CLASS`` samples per class."""
    g = torch.Generator().manual_seed(seed)
    X = normalize(torch.randn(n, dim, generator=g), dim=1)
    y = torch.arange(n) // PER_CLASS
    return X, y[torch.randperm(n, generator=g)]


def matlab_port_loss_backward(X: Tensor, y: Tensor, nbins: int) -> Tensor:
    """The MATLAB layer as the authors wrote it, ported literally: a loop over bins with
    ``N x N`` pulses in the forward and dense ``N x N`` diagonal-matrix products in the
    backward (``Ap = ddp * diag(a) + diag(a) * ddp``). Returns ``dInputs`` (``N x D``)."""
    N = X.shape[0]
    L = nbins + 1
    Delta = 4.0 / nbins
    Z = torch.linspace(0, 4, L)
    eye = torch.eye(N, dtype=torch.bool)
    same = y[:, None] == y[None, :]
    I_pos = (same & ~eye).float()
    I_neg = (~same).float()
    N_pos = I_pos.sum(1)
    dist2 = torch.clamp(2 - 2 * X @ X.T, min=0)
    h_pos = torch.zeros(N, L)
    h_neg = torch.zeros(N, L)
    for l in range(L):  # noqa: E741 (MATLAB's loop variable)
        pulse = torch.clamp(1 - (dist2 - Z[l]).abs() / Delta, min=0)
        h_pos[:, l] = (pulse * I_pos).sum(1)
        h_neg[:, l] = (pulse * I_neg).sum(1)
    H_pos = h_pos.cumsum(1)
    H = (h_pos + h_neg).cumsum(1)
    H_neg = H - H_pos
    H2 = H ** 2
    tmp1 = torch.nan_to_num(h_pos * H_neg / H2, nan=0.0)
    d_AP_h_pos = (H_pos * H + h_pos * H_neg) / H2 + tmp1 @ torch.triu(torch.ones(L, L), 1).T
    d_AP_h_pos = torch.nan_to_num(d_AP_h_pos / N_pos[:, None], nan=0.0, posinf=0.0, neginf=0.0)
    tmp2 = torch.nan_to_num(-h_pos * H_pos / H2, nan=0.0)
    d_AP_h_neg = tmp2 @ torch.triu(torch.ones(L, L)).T
    d_AP_h_neg = torch.nan_to_num(d_AP_h_neg / N_pos[:, None], nan=0.0, posinf=0.0, neginf=0.0)
    d_AP_x = torch.zeros_like(X)
    for l in range(L):  # noqa: E741
        ind1 = (dist2 > Z[l] - Delta) & (dist2 <= Z[l])
        ind2 = (dist2 > Z[l]) & (dist2 <= Z[l] + Delta)
        dpulse = (ind1.float() - ind2.float()) / Delta
        ddp = dpulse * I_pos
        ddn = dpulse * I_neg
        alpha_p = torch.diag(d_AP_h_pos[:, l])
        alpha_n = torch.diag(d_AP_h_neg[:, l])
        Ap = ddp @ alpha_p + alpha_p @ ddp
        An = ddn @ alpha_n + alpha_n @ ddn
        d_AP_x = d_AP_x - (Ap + An).T @ X
    return -d_AP_x


def _method(name: str, nbins: int) -> Callable[[Tensor, Tensor], object]:
    """A callable running one forward + backward of the named method."""
    if name == "floor":
        def floor(X: Tensor, y: Tensor) -> Tensor:
            G = X @ X.T
            return G @ X
        return floor
    if name == "ours":
        loss_fn = FastAPLoss(nbins)
    elif name == "pml":
        from pytorch_metric_learning.losses import FastAPLoss as PmlFastAPLoss

        loss_fn = PmlFastAPLoss(num_bins=nbins)
    elif name == "matlab_port":
        return lambda X, y: matlab_port_loss_backward(X, y, nbins)
    else:
        raise ValueError(f"unknown method {name!r}")

    def loss_backward(X: Tensor, y: Tensor) -> Tensor:
        x = X.detach().requires_grad_(True)
        loss_fn(x, y).backward()
        return x.grad
    return loss_backward


def time_call(fn: Callable[[Tensor, Tensor], object], X: Tensor, y: Tensor,
              budget_s: float = 3.0, max_reps: int = 20) -> float:
    """Fastest of repeated calls (seconds): one warm-up, then at least 2 calls, up to the
    budget. The minimum, not the median: on a shared machine the slower calls measure the
    neighbours' load, not the method."""
    def sync() -> None:  # a CUDA call returns before the device is done
        if X.is_cuda:
            torch.cuda.synchronize(X.device)

    fn(X, y)
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 2 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn(X, y)
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_here(name: str, n: int, dim: int, nbins: int) -> dict[str, float]:
    """Peak RSS increase of one call in this process (meant for a fresh subprocess)."""
    fn = _method(name, nbins)
    X, y = make_batch(n, dim)
    fn(*make_batch(8, dim))  # load lazily imported code outside the measurement
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    before = _status_kib("VmRSS")
    fn(X, y)
    peak = _status_kib("VmHWM")
    delta = max(peak - before, 0) * 1024
    return {"peak_mib": delta / 2 ** 20, "nn_buffers": delta / (4 * n * n)}


def measure_memory(name: str, n: int, dim: int, nbins: int) -> dict[str, float] | None:
    """``measure_memory_here`` in a fresh interpreter; None if it failed (e.g. out of memory)."""
    cmd = [sys.executable, __file__, "--memory-probe", name, str(n), "--dim", str(dim),
           "--bins", str(nbins)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"  memory probe {name} N={n} failed: {done.stderr.strip()[-200:]}",
              file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(n: int, t: dict[str, float], mem: dict[str, dict[str, float] | None]) -> str:
    """One markdown table row: times, ratios, peak memory."""

    def ms(m: str) -> str:
        return f"{1e3 * t[m]:.1f}" if m in t else "skipped"

    def ratio(a: str, b: str) -> str:
        return f"{t[a] / t[b]:.2f}" if a in t and b in t else "-"

    def mib(m: str, bufs: bool = False) -> str:
        got = mem.get(m)
        if not got:
            return "-"
        return (f"{got['peak_mib']:.0f} ({got['nn_buffers']:.1f})" if bufs
                else f"{got['peak_mib']:.0f}")

    return (f"| {n} | {ms('floor')} | {ms('ours')} | {ms('pml')} | {ms('matlab_port')} | "
            f"{ratio('ours', 'floor')} | {ratio('pml', 'ours')} | "
            f"{ratio('matlab_port', 'ours')} | {mib('ours', True)} | {mib('pml')} | "
            f"{mib('matlab_port')} | {mib('floor')} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--port-max-n", type=int, default=PORT_MAX_N)
    parser.add_argument("--pml-max-n", type=int, default=PML_MAX_N)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (on a GPU: no port, whose tensors are CPU-only, and "
                             "no memory probes, which read the process's resident memory)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, n = args.memory_probe
        print(json.dumps(measure_memory_here(name, int(n), args.dim, args.bins)))
        return 0
    try:
        import pytorch_metric_learning  # noqa: F401
        have_pml = True
    except ImportError:
        have_pml = False
        print("pytorch-metric-learning not installed: pml column skipped", file=sys.stderr)
    on_cpu = torch.device(args.device).type == "cpu"
    where = (f"CPU threads={torch.get_num_threads()}" if on_cpu
             else torch.cuda.get_device_name(torch.device(args.device)))
    print(f"# FastAP forward+backward, D={args.dim}, {args.bins} bins, float32, {where}, "
          f"torch {torch.__version__}")
    header = ("N", "floor ms", "ours ms", "pml ms", "port ms", "ours/floor", "pml/ours",
              "port/ours", "ours MiB (NxN bufs)", "pml MiB", "port MiB", "floor MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results = []
    for n in args.sizes:
        X, y = (t.to(args.device) for t in make_batch(n, args.dim))
        methods = ["floor", "ours"]
        if have_pml and n <= args.pml_max_n:
            methods.append("pml")
        if n <= args.port_max_n and on_cpu:
            methods.append("matlab_port")
        t = {m: time_call(_method(m, args.bins), X, y) for m in methods}
        mem = {} if args.no_memory or not on_cpu else {m: measure_memory(m, n, args.dim,
                                                                          args.bins)
                                         for m in methods}
        results.append({"N": n, "time_s": t, "memory": mem})
        print(format_row(n, t, mem), flush=True)
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
