"""Write SIMULATED FastAP training diaries that follow the MATLAB print statements exactly.

The authors' diaries are not available here, so tests and the default run use diaries made
by this module from the print statements of ``run_demo.m`` (``disp(opts)``,
``disp(imdb.images)``, ``postepoch``), ``get_model.m``, ``train_hard.m`` /
``train_hard_vid.m`` (``processEpoch``: epoch header, meta-classes, a progress line whenever
30 s have passed, the epoch average; ``saveState``; resume; ``prepareGPUs`` with its
unterminated ``gpuDevice`` call) and ``evaluate_model.m`` (``cnn_encode``, ``whos``,
``toc``, ``K: %4d, Recall: %.3f``). Numbers (objectives, recalls, speeds, times) are made
up by a seeded generator; they are not the paper's and not the authors' logs.

Every simulated run is labelled: ``opts.prefix`` is ``simulated`` (the real code puts a git
timestamp there), so the identifier, the experiment folder and the run name all start with
``simulated``.

One deliberate deviation: ``evaluate_model.m`` logs ``[%s] Recall on [%s]`` with an
undefined variable ``dataset`` for VehicleID (a defect of the released code); the simulator
prints ``opts.dataset`` there, as the version that wrote the authors' logs must have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from logs.diary_parser import SIMULATED_PREFIX, recall_column

#: Where the shipped sample diaries live (package data).
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

_KS = {"products": [1, 10, 100, 1000], "inshop": [1, 10, 20, 30, 40, 50], "vid": [1, 5]}
#: numel(imdb.images.data), columns of labels and of set, per dataset.
_IMDB = {"products": (120053, 2, 1), "inshop": (52712, 4, 1), "vid": (221567, 3, 4)}
_TEST_SIZES = {"products": [("Ftest", 60502)], "inshop": [("Fquery", 14218),
                                                          ("Fgallery", 12612)],
               "vid": [("Ftest", 6493), ("Ftest", 13377), ("Ftest", 19777)]}
_MAX_GPU_IMGS = {"resnet50": 90, "resnet18": 256, "googlenet": 320}
_BPMP = {"products": 5, "inshop": 2, "vid": 0}
_META_CLASSES = {"products": 12, "inshop": 23, "vid": 8}
#: Train images per VehicleID colour meta-class 2..8 (made up; class 1 = no colour label).
_VID_META_SIZES = (9120, 8410, 7350, 6020, 5110, 4480, 3950)
#: Simulated recall (fraction) at epoch 1 and the level it approaches, per dataset and K.
_RECALL_START = {"products": [0.62, 0.80, 0.91, 0.97], "inshop": [0.70, 0.90, 0.94, 0.955,
                                                                   0.963, 0.97],
                 "vid": [0.80, 0.90]}
_RECALL_END = {"products": [0.752, 0.884, 0.949, 0.981], "inshop": [0.889, 0.972, 0.981,
                                                                     0.985, 0.987, 0.989],
               "vid": [0.905, 0.958]}
_SIM_ROOT = "/simulated/FastAP-metric-learning/matlab/cachedir"
_HOST = "simulated-host"


@dataclass
class SimSpec:
    """What to simulate: the run's options and which damage to put in the diaries."""

    dataset: str = "products"
    arch: str = "resnet50"
    batch_size: int = 256
    dim: int = 512
    epochs: int = 12
    test_interval: int = 3
    seed: int = 0
    stop_in_epoch: int | None = None  # diary_001 ends there (Ctrl-C), diary_002 resumes
    nan_epochs: Sequence[int] = ()  # every batch objective NaN in these epochs
    warning_on_resume: bool = False  # loadState's "partially saved" warning after resuming
    crlf: bool = False  # write CRLF line ends
    truncate_last_line: bool = False  # cut the last line of the last diary in half
    progress_seconds: float = 30.0


@dataclass
class SimulatedRun:
    """Where the diaries went and the values they print (the parser's expected output)."""

    folder: Path
    files: list[Path]
    options: dict[str, Any]
    objectives: dict[int, float] = field(default_factory=dict)  # as printed by %g
    recall: dict[int, dict[str, float]] = field(default_factory=dict)  # as printed by %.3f
    checkpoints: list[int] = field(default_factory=list)
    resumed_from: int | None = None
    diary_epochs: list[list[int]] = field(default_factory=list)  # epochs each diary trains


# ---- MATLAB formatting ----------------------------------------------------------------------
def mformat(fmt: str, *values: Any) -> str:
    """``sprintf`` as MATLAB prints it: NaN and Inf as ``NaN``/``Inf``, not ``nan``."""
    text = fmt % values
    return text.replace("nan", "NaN").replace("inf", "Inf")


def disp_value(value: Any) -> str:
    """A value as ``disp(struct)`` shows it (short format)."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return "[" + " ".join(disp_value(v) for v in value) + "]" if value else "[]"
    if value is None:
        return "[]"
    number = float(value)
    if number == int(number) and abs(number) < 1e9:
        return str(int(number))
    if 1e-3 <= abs(number) < 1e5:
        return f"{number:.4f}"
    mantissa, exponent = f"{number:.4e}".split("e")
    return f"{mantissa}e{int(exponent):+03d}"


def disp_struct(fields: dict[str, Any], raw: bool = False) -> list[str]:
    """``disp`` of a struct: names right-aligned, four spaces before the longest."""
    width = max(len(name) for name in fields) + 4
    return [f"{name:>{width}}: {value if raw else disp_value(value)}"
            for name, value in fields.items()]


def run_options(spec: SimSpec) -> dict[str, Any]:
    """``opts`` as ``run_demo`` displays it, in ``get_opts``/``process_opts`` order."""
    lr, lrmult, wdecay, nbins, solver = 1e-5, 10, 0, 10, "adam"
    exp_id = f"{spec.dataset}-FastAP-{spec.dim}-{spec.arch}"
    identifier = (f"{SIMULATED_PREFIX}-{nbins}bins-batch{spec.batch_size}-{solver}"
                  f"{lr:.0e}mult{lrmult:g}-WD{wdecay:.0e}")
    return {
        "ablation": 0, "arch": spec.arch, "batchSize": spec.batch_size, "continue": True,
        "debug": False, "dim": spec.dim, "epoch": spec.epochs, "gpus": 1, "lr": lr,
        "lrdecay": 0.1, "lrmult": lrmult, "lrstep": 10, "nbins": nbins, "obj": "FastAP",
        "plot": False, "prefix": SIMULATED_PREFIX, "randseed": 42, "solver": solver,
        "testInterval": spec.test_interval, "wdecay": wdecay, "Ks": _KS[spec.dataset],
        "dataset": spec.dataset, "expID": exp_id, "maxGpuImgs": _MAX_GPU_IMGS[spec.arch],
        "identifier": identifier, "localDir": _SIM_ROOT, "dataDir": f"{_SIM_ROOT}/data",
        "imdbPath": f"{_SIM_ROOT}/data/imdb_{spec.dataset}",
        "expDir": f"{_SIM_ROOT}/{exp_id}/{identifier}",
    }


# ---- the run ---------------------------------------------------------------------------------
class _Writer:
    """Generates the lines of one simulated run, diary by diary."""

    def __init__(self, spec: SimSpec, result: SimulatedRun) -> None:
        self.spec = spec
        self.result = result
        self.opts = result.options
        self.rng = np.random.default_rng(spec.seed)
        self.clock = datetime(2018, 10, 2, 9, 30, 0) + timedelta(days=spec.seed % 7)
        self.staged = spec.batch_size > _MAX_GPU_IMGS[spec.arch]
        base = {"resnet50": 48.0, "resnet18": 310.0, "googlenet": 240.0}[spec.arch]
        self.hz = base * (1.0 + 0.02 * self.rng.standard_normal())
        self.train_hard = "train_hard_vid" if spec.dataset == "vid" else "train_hard"
        self.recall_cache: dict[int, list[float]] = {}

    # -- blocks --
    def header(self) -> list[str]:
        spec, lines = self.spec, disp_struct(self.opts)
        n, label_cols, set_cols = _IMDB[spec.dataset]
        lines.append(mformat("get_model: %s in %.2fs", spec.arch, 1.0 + self.rng.random()))
        lines.append(f"get_imdb: IMDB: {spec.dataset}_224")
        lines.append("get_imdb: Analyzing meta-classes...")
        lines.append(mformat("Elapsed time is %f seconds.", 2.0 + 3.0 * self.rng.random()))
        lines.append(mformat("get_imdb: %s_224 in %.2f sec", spec.dataset,
                             9.0 + 4.0 * self.rng.random()))
        lines += disp_struct({"data": f"{{{n}\u00d71 cell}}",
                              "labels": f"[{n}\u00d7{label_cols} single]",
                              "set": f"[{n}\u00d7{set_cols} uint8]"}, raw=True)
        return lines

    def gpu_reset(self) -> list[str]:
        device = {"Name": "'TITAN X (Pascal)'", "Index": "1", "ComputeCapability": "'6.1'",
                  "SupportsDouble": "1", "DriverVersion": "9.1000", "ToolkitVersion": "8",
                  "MaxThreadsPerBlock": "1024", "TotalMemory": "1.2785e+10",
                  "AvailableMemory": "1.2510e+10", "MultiprocessorCount": "28",
                  "ComputeMode": "'Default'", "DeviceSupported": "1", "DeviceSelected": "1"}
        return [f"{self.train_hard}: resetting GPU", "ans = ", "",
                "  CUDADevice with properties:", "", *disp_struct(device, raw=True), ""]

    def batches(self) -> tuple[int, str]:
        spec = self.spec
        if spec.dataset == "vid":
            total = sum(math.ceil(2 * m / spec.batch_size) for m in _VID_META_SIZES)
            return total, mformat("processEpoch: %d meta-classes, %d batches",
                                  _META_CLASSES["vid"] - 1, total)
        nmeta = _META_CLASSES[spec.dataset]
        total = nmeta * (nmeta - 1) // 2 * _BPMP[spec.dataset]
        return total, mformat("processEpoch: %d meta-classes, %d batches per meta-class pair",
                              nmeta, _BPMP[spec.dataset])

    def train_epoch(self, epoch: int, stop: bool) -> tuple[list[str], bool]:
        """An epoch's lines; with ``stop`` the run is interrupted a third of the way in."""
        spec = self.spec
        lines = [mformat("processEpoch: Epoch %d/%d: solver.%s LR=%e", epoch, spec.epochs,
                         self.opts["solver"], self.opts["lr"])]
        total, meta_line = self.batches()
        lines.append(meta_line)
        mode = "train_staged" if self.staged else "train"
        level = 0.28 + 0.32 * math.exp(-(epoch - 1) / 4.0)
        objs: list[float] = []
        elapsed = since_print = 0.0
        for batch in range(1, total + 1):
            if stop and batch > total // 3:
                lines.append("Operation terminated by user during "
                             f"{self.train_hard}>processEpoch (line 289)")
                lines += ["", "", f"In {self.train_hard} (line 119)",
                          "In run_demo (line 75)", ""]
                return lines, False
            obj = float("nan") if epoch in spec.nan_epochs else \
                level + 0.04 * self.rng.standard_normal()
            objs.append(obj)
            step = spec.batch_size / (self.hz * (1.0 + 0.05 * self.rng.standard_normal()))
            elapsed += step
            since_print += step
            if since_print > spec.progress_seconds:
                valid = [o for o in objs if not math.isnan(o)]
                mean = float(np.mean(valid)) if valid else float("nan")
                lines.append(mformat("%s-%s ep%02d: %3d/%3d (%d) %.1fHz obj: %.3f (%.3f)",
                                     spec.dataset, mode, epoch, batch, total, spec.batch_size,
                                     batch * spec.batch_size / elapsed, obj, mean))
                since_print = 0.0
        self.clock += timedelta(seconds=elapsed)
        valid = [o for o in objs if not math.isnan(o)]
        average = mformat("%g", float(np.mean(valid)) if valid else float("nan"))
        lines.append(f"processEpoch: Epoch {epoch}, Avg train obj = {average}")
        self.result.objectives[epoch] = float(average)
        if epoch % spec.test_interval == 0:
            lines.append(f"saveState: saved: {self.opts['expDir']}/net-epoch-{epoch}.mat")
            self.result.checkpoints.append(epoch)
        return lines, True

    def postepoch(self, epoch: int) -> list[str]:
        lines = [f"postepoch: {self.opts['expID']}", f"postepoch: {self.opts['identifier']}",
                 "postepoch: " + self.clock.strftime("%d-%b-%Y %H:%M:%S"),
                 f"postepoch: GPU #1 on {_HOST}", ""]  # `hostname` output ends with a newline
        if epoch == 1 or epoch % self.spec.test_interval == 0:
            lines += self.evaluate(epoch)
        return lines

    def evaluate(self, epoch: int) -> list[str]:
        spec, arch = self.spec, self.spec.arch
        ks = _KS[spec.dataset]
        recall = self.recall_at(epoch)
        printed: dict[str, float] = {}
        lines: list[str] = []

        def encode(count: int) -> list[str]:
            return [f"cnn_encode: Testing [{arch}] on {count} -> feats_l2",
                    mformat("Elapsed time is %f seconds.", count / (self.hz * 1.9))]

        def k_lines(values: Sequence[float], subset: str | None) -> list[str]:
            out = [mformat("Elapsed time is %f seconds.", 20.0 + 30.0 * self.rng.random())]
            for k, value in zip(ks, values, strict=True):
                text = mformat("%.3f", value)
                out.append(f"K: {k:4d}, Recall: {text}")
                printed[recall_column(k, subset)] = float(text)
            return out

        whos_header = ["  Name             Size                  Bytes  Class     Attributes",
                       ""]
        if spec.dataset == "vid":
            for subset, (_, count) in zip(("Small", "Medium", "Large"),
                                          _TEST_SIZES["vid"], strict=True):
                lines += encode(count)
                lines.append(f"evaluate_model: [{spec.dataset}] Recall on [{subset}] ...")
                offset = {"Small": 0.0, "Medium": 0.013, "Large": 0.041}[subset]
                lines += k_lines([v - offset for v in recall], subset.lower())
        else:
            rows = []
            for name, count in _TEST_SIZES[spec.dataset]:
                lines += encode(count)
                rows.append(f"  {name:<9}{count:>9}x{spec.dim:<12}{count * spec.dim * 4:>14}"
                            "  single              ")
            lines += whos_header + rows + [""]
            what = "Recall & NMI" if spec.dataset == "products" else "Recall"
            lines.append(f"evaluate_model: [{spec.dataset}] {what} ...")
            lines += k_lines(recall, None)
        self.result.recall[epoch] = printed
        return lines

    def recall_at(self, epoch: int) -> list[float]:
        """Recall of the net after ``epoch`` (the same net gives the same values again)."""
        if epoch not in self.recall_cache:
            self.recall_cache[epoch] = self._recall_curve(epoch)
        return self.recall_cache[epoch]

    def _recall_curve(self, epoch: int) -> list[float]:
        start, end = _RECALL_START[self.spec.dataset], _RECALL_END[self.spec.dataset]
        shape = 1.0 - math.exp(-(epoch - 1) / 6.0)
        noise = 0.002 * self.rng.standard_normal()
        return [min(0.9999, s + (e - s) * shape + noise) for s, e in zip(start, end, strict=True)]


def simulate_run(root: str | Path, spec: SimSpec) -> SimulatedRun:
    """Write the diaries of one simulated run under ``root/<expID>/<identifier>/``."""
    options = run_options(spec)
    folder = Path(root) / options["expID"] / options["identifier"]
    folder.mkdir(parents=True, exist_ok=True)
    result = SimulatedRun(folder=folder, files=[], options=options)
    writer = _Writer(spec, result)
    diaries: list[list[str]] = []
    first = 1
    while first <= spec.epochs:
        lines = writer.header()
        if first > 1:
            lines.append(f"{writer.train_hard}: resuming by loading epoch {first - 1}")
            result.resumed_from = first - 1
            if spec.warning_on_resume:
                checkpoint = f"{options['expDir']}/net-epoch-{first - 1}.mat"
                lines += [f"Warning: Epoch '{checkpoint}' was only partially saved. Delete "
                          "this file and try again. ",
                          f"> In {writer.train_hard}>loadState (line 421)",
                          f"  In {writer.train_hard} (line 86)", "  In run_demo (line 75) "]
        trained: list[int] = []
        stopped = False
        for epoch in range(first, spec.epochs + 1):
            if epoch == first:
                lines += writer.gpu_reset()
            stop = epoch == spec.stop_in_epoch and not diaries
            epoch_lines, finished = writer.train_epoch(epoch, stop)
            lines += epoch_lines
            trained.append(epoch)
            if not finished:
                stopped = True
                break
            lines += writer.postepoch(epoch)
        result.diary_epochs.append(trained)
        if not stopped and writer.train_hard == "train_hard":
            lines.append(f"train_hard: Complete: {spec.epochs} epochs.")
            lines += writer.postepoch(spec.epochs)
        diaries.append(lines)
        if not stopped:
            break
        saved = [e for e in result.checkpoints if e < trained[-1]]
        first = (max(saved) if saved else 0) + 1
    for number, lines in enumerate(diaries, start=1):
        path = folder / f"diary_{number:03d}.txt"
        ending = "\r\n" if spec.crlf else "\n"
        text = ending.join(lines) + ending
        if spec.truncate_last_line and number == len(diaries):
            text = text.rstrip("\r\n")  # a killed MATLAB leaves its last line half-written
            start = text.rfind("\n") + 1
            text = text[: start + (len(text) - start) // 2]
        path.write_bytes(text.encode("utf-8"))
        result.files.append(path)
    return result


#: The shipped samples: a staged ResNet-50 run with a resume, a ResNet-18 In-Shop run and a
#: ResNet-18 VehicleID run (all SIMULATED).
SAMPLE_SPECS = (
    SimSpec(dataset="products", arch="resnet50", batch_size=256, dim=512, epochs=12,
            test_interval=3, seed=1, stop_in_epoch=8),
    SimSpec(dataset="inshop", arch="resnet18", batch_size=256, dim=512, epochs=50,
            test_interval=10, seed=2),
    SimSpec(dataset="vid", arch="resnet18", batch_size=256, dim=512, epochs=50,
            test_interval=10, seed=3),
)


def write_samples(root: str | Path = SAMPLES_DIR) -> list[SimulatedRun]:
    """(Re)write the shipped sample diaries under ``root``."""
    return [simulate_run(root, spec) for spec in SAMPLE_SPECS]


if __name__ == "__main__":  # pragma: no cover - regenerates logs/samples
    for sample in write_samples():
        print(sample.folder)
