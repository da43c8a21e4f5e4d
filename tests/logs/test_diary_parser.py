"""Diary parser: every line kind, simulated diaries (also damaged ones), real pasted logs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from logs import diary_lines as dl
from logs.diary_parser import _span, parse_diary, parse_run
from logs.errors import LogFormatError
from logs.simulator import SAMPLES_DIR, SimSpec, simulate_run, write_samples
from logs.stats import stats_epochs
from tests import REALFILES

REAL_LOGS = REALFILES / "logs"

LINES = [
    ("    testInterval: 3", dl.FIELD, {"name": "testInterval", "value": 3}),
    ("              lr: 1.0000e-05", dl.FIELD, {"value": 1e-05}),
    ("            arch: 'resnet50'", dl.FIELD, {"value": "resnet50"}),
    ("              Ks: [1 10 100 1000]", dl.FIELD, {"value": [1, 10, 100, 1000]}),
    ("          prefix: []", dl.FIELD, {"value": None}),
    ("      data: {120053\u00d71 cell}", dl.FIELD, {"value": "{120053\u00d71 cell}"}),
    ("get_model: resnet50 in 1.23s", dl.MODEL, {"arch": "resnet50", "seconds": 1.23}),
    ("get_imdb: IMDB: products_224", dl.IMDB_NAME, {"imdb": "products_224"}),
    ("get_imdb: Analyzing meta-classes...", dl.IMDB_META, {}),
    ("get_imdb: products_224 in 12.34 sec", dl.IMDB_LOADED, {"seconds": 12.34}),
    ("products:  test: 60502", dl.IMDB_BUILD, {}),
    ("vid: test-small: 6493 imgs", dl.IMDB_BUILD, {}),
    ("process_opts: creating opts.expDir: /x/y", dl.EXP_DIR, {"path": "/x/y"}),
    ("train_hard: resuming by loading epoch 6", dl.RESUME, {"epoch": 6}),
    ("train_hard_vid: resetting GPU", dl.GPU_RESET, {}),
    ("ans = ", dl.DISPLAY_HEADER, {}),
    ("  CUDADevice with properties:", dl.DISPLAY_HEADER, {}),
    ("processEpoch: Epoch 3/30: solver.adam LR=1.000000e-05", dl.EPOCH_START,
     {"epoch": 3, "num_epochs": 30, "solver": "solver.adam", "lr": 1e-05}),
    ("train_hard>processEpoch: Epoch 3/30: solver.adam LR=1.000000e-05", dl.EPOCH_START,
     {"epoch": 3, "caller": "train_hard>processEpoch"}),
    ("processEpoch: 12 meta-classes, 5 batches per meta-class pair", dl.META_CLASSES,
     {"meta_classes": 12, "batches_per_pair": 5}),
    ("train_hard_vid>processEpoch: 7 meta-classes, 353 batches", dl.META_CLASSES,
     {"meta_classes": 7, "batches": 353}),
    ("products-train_staged ep03:  25/330 (256) 57.3Hz obj: 0.612 (0.571)", dl.PROGRESS,
     {"dataset": "products", "mode": "train_staged", "epoch": 3, "batch": 25, "batches": 330,
      "batch_size": 256, "hz": 57.3, "obj": 0.612, "mean": 0.571}),
    ("inshop-train ep12:   7/506 (256) 310.2Hz obj: NaN (0.402)", dl.PROGRESS,
     {"mode": "train", "epoch": 12}),
    ("processEpoch: Epoch 3, Avg train obj = 0.5234", dl.EPOCH_END,
     {"epoch": 3, "mode": "train", "objective": 0.5234}),
    ("processEpoch: Epoch 4, Avg train obj = NaN", dl.EPOCH_END, {"epoch": 4}),
    ("saveState: saved: /c/products-FastAP-512-resnet50/x/net-epoch-3.mat", dl.CHECKPOINT,
     {"epoch": 3}),
    ("postepoch: products-FastAP-512-resnet50", dl.POSTEPOCH, {"what": "expID"}),
    ("postepoch: 0312.152345-10bins-batch256-adam1e-05mult10-WD0e+00", dl.POSTEPOCH,
     {"what": "identifier"}),
    ("postepoch: 02-Oct-2018 10:15:32", dl.POSTEPOCH, {"what": "date"}),
    ("postepoch: GPU #1 on node12", dl.POSTEPOCH, {"what": "gpu", "gpu": 1, "host": "node12"}),
    ("cnn_encode: Testing [resnet50] on 60502 -> feats_l2", dl.ENCODE, {"count": 60502}),
    ("evaluate_model: [products] Recall & NMI ...", dl.EVAL_HEADER, {"subset": None}),
    ("evaluate_model: [inshop] Recall ...", dl.EVAL_HEADER, {"dataset": "inshop"}),
    ("evaluate_model: [vid] Recall on [Medium] ...", dl.EVAL_HEADER, {"subset": "Medium"}),
    ("K:    1, Recall: 0.764", dl.RECALL, {"K": 1, "recall": 0.764}),
    ("K: 1000, Recall: 0.982", dl.RECALL, {"K": 1000}),
    ("Elapsed time is 301.234567 seconds.", dl.ELAPSED, {"seconds": 301.234567}),
    ("  Name           Size                 Bytes  Class     Attributes", dl.WHOS_HEADER, {}),
    ("  Ftest      60502x512            123908096  single              ", dl.WHOS_ROW,
     {"rows": 60502, "cols": 512}),
    ("train_hard: Complete: 30 epochs.", dl.COMPLETE, {"epochs": 30}),
    ("Warning: Epoch 'x' was only partially saved. ", dl.MATLAB_WARNING, {}),
    ("Error in cnn_train (line 127)", dl.MATLAB_ERROR, {}),
    ("Operation terminated by user during train_hard>processEpoch (line 289)",
     dl.MATLAB_ERROR, {}),
    ("> In train_hard>loadState (line 421)", dl.MATLAB_TRACE, {"line": 421}),
    ("", dl.BLANK, {}),
]


def test_every_kind_is_exercised() -> None:
    assert {kind for _, kind, _ in LINES} == set(dl.ALL_KINDS)


@pytest.mark.parametrize(("line", "kind", "expected"), LINES, ids=[k for _, k, _ in LINES])
def test_line_kinds(line: str, kind: str, expected: dict) -> None:
    parsed = dl.classify(line)
    assert parsed is not None and parsed.kind == kind
    for key, value in expected.items():
        assert parsed.data[key] == value


@pytest.mark.parametrize("line", [
    "train: epoch 01:   1/  2: 7.4 Hz obj:95.7 top1err:0.73 top5err:0 [100/100]",
    "processEpoch: something nobody prints",
    "K: one, Recall: 0.5",
    "Subscripted assignment between dissimilar structures.",
])
def test_unknown_lines(line: str) -> None:
    assert dl.classify(line) is None


def test_nan_progress_value() -> None:
    parsed = dl.classify("inshop-train ep12:   7/506 (256) 310.2Hz obj: NaN (0.402)")
    assert parsed is not None and math.isnan(parsed.data["obj"])


def test_simulated_resume_merges_to_known_values(tmp_path: Path) -> None:
    sim = simulate_run(tmp_path, SimSpec(epochs=9, test_interval=3, stop_in_epoch=5, seed=4))
    assert [p.name for p in sim.files] == ["diary_001.txt", "diary_002.txt"]
    run = parse_run(reversed(sim.files))  # order comes from the file numbers
    assert run.simulated and run.name.endswith("simulated-10bins-batch256-adam1e-05mult10-WD0e+00")
    assert sorted(run.epochs) == list(range(1, 10))
    assert run.diaries[1].resumed_from == 3
    assert {e: r.train_objective for e, r in run.epochs.items()} == sim.objectives
    assert {e: r.recall for e, r in run.epochs.items() if r.recall} == sim.recall
    assert run.epochs[4].source == "diary_002.txt"  # re-trained after resuming
    assert any("epoch 4 of diary_001.txt replaced" in n for n in run.notes)
    assert [e for e, r in run.epochs.items() if r.checkpoint] == [3, 6, 9]
    assert run.epochs[2].mode == "train_staged" and run.epochs[2].progress
    assert run.options["batchSize"] == 256 and run.options["Ks"] == [1, 10, 100, 1000]
    assert run.unrecognised == []
    assert [m.reason for m in run.matlab_messages][0] == "matlab_error"  # Ctrl-C


def test_damaged_diary(tmp_path: Path) -> None:
    spec = SimSpec(dataset="vid", arch="resnet18", epochs=4, test_interval=2, seed=5,
                   stop_in_epoch=3, nan_epochs=(2,), warning_on_resume=True, crlf=True,
                   truncate_last_line=True)
    sim = simulate_run(tmp_path, spec)
    raw = sim.files[-1].read_bytes()
    assert b"\r\n" in raw and not raw.endswith(b"\n")
    run = parse_run(sim.files)
    assert math.isnan(run.epochs[2].train_objective)
    assert any("NaN in epochs 2" in n for n in run.notes)
    truncated = [i for i in run.unrecognised if i.reason.startswith("truncated")]
    assert len(truncated) == 1 and truncated[0].file == "diary_002.txt"
    assert truncated[0].line == run.diaries[1].lines
    assert any(m.reason == "matlab_warning" for m in run.matlab_messages)
    assert run.epochs[2].recall["medium R@5"] == sim.recall[2]["medium R@5"]
    assert run.options["dataset"] == "vid"  # CRLF did not leak into values


def test_unknown_line_inside_diary_is_reported(tmp_path: Path) -> None:
    sim = simulate_run(tmp_path, SimSpec(dataset="inshop", arch="resnet18", epochs=1, seed=6))
    lines = sim.files[0].read_text().splitlines()
    lines.insert(40, "something MATLAB never printed")
    sim.files[0].write_text("\n".join(lines) + "\n")
    diary = parse_diary(sim.files[0])
    found = [(i.line, i.text) for i in diary.unrecognised]
    assert found == [(41, "something MATLAB never printed")]
    assert diary.epochs[1].recall["R@50"] == sim.recall[1]["R@50"]


@pytest.mark.parametrize("path", sorted(REAL_LOGS.glob("*.txt")), ids=lambda p: p.name[:30])
def test_real_pasted_logs_give_a_report(path: Path) -> None:
    run = parse_run([path])
    total = run.diaries[0].lines
    assert total == len(path.read_text().splitlines())
    assert run.epochs == {}
    assert len(run.unrecognised) + len(run.matlab_messages) + run.diaries[0].counts["blank"] \
        == total
    assert any("not a FastAP MATLAB diary" in n for n in run.notes)
    assert all(i.line >= 1 for i in run.unrecognised)


def test_real_log_with_matlab_error_trace() -> None:
    name = "log_cnn_train_simplenn_beta19_issues_vlfeat-matconvnet-526-536.txt"
    run = parse_run([REAL_LOGS / name])
    texts = [m.text for m in run.matlab_messages]
    assert "Error in cnn_train (line 127)" in texts
    assert any("process_epoch(net, state, opts, 'train')" in t for t in texts)


def test_binary_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "diary_001.txt"
    path.write_bytes(b"MATLAB 5.0 MAT-file\x00\x00\x01")
    with pytest.raises(LogFormatError, match="diary_001.txt"):
        parse_diary(path)


def test_shipped_samples_parse_cleanly() -> None:
    folders = sorted({p.parent for p in SAMPLES_DIR.rglob("diary_*.txt")})
    assert len(folders) == 3
    for folder in folders:
        run = parse_run(sorted(folder.glob("diary_*.txt")))
        assert run.simulated and run.unrecognised == []
        assert run.epochs[max(run.epochs)].recall


def test_stats_tree_to_epochs() -> None:
    tree = {"stats": {
        "train": [{"num": np.array([[0.0]]), "time": np.array([[100.0]]),
                   "objective": np.array([[0.61]])},
                  {"num": np.array([[0.0]]), "time": np.array([[200.0]]),
                   "objective": np.array([[np.nan]])},
                  {"num": np.array([[0.0]]), "time": np.array([[300.0]])}],
        "val": [{"num": np.array([[0.0]]), "time": np.array([[0.0]])}] * 3}}
    frame = stats_epochs(tree, "run-a")
    assert list(frame.columns[:3]) == ["run", "epoch", "train_objective"]
    assert frame["epoch"].tolist() == [1, 2, 3]
    assert frame["train_objective"].iloc[0] == 0.61
    assert frame["train_objective"].iloc[1:].isna().all()
    assert frame["train_time"].tolist() == [100.0, 200.0, 300.0]
    with pytest.raises(LogFormatError, match="run-b"):
        stats_epochs({"val": []}, "run-b")


def test_latin1_diary_is_read(tmp_path: Path) -> None:
    path = tmp_path / "diary_001.txt"
    path.write_bytes("      data: {120053\xd71 cell}\r\nget_model: resnet50 in 1.00s\r\n"
                     .encode("latin-1"))
    diary = parse_diary(path)
    assert diary.options["data"] == "{120053\u00d71 cell}" and diary.model_seconds == 1.0
    assert diary.unrecognised == []


def test_shipped_samples_are_what_the_simulator_writes(tmp_path: Path) -> None:
    runs = write_samples(tmp_path)
    for run in runs:
        for path in run.files:
            shipped = SAMPLES_DIR / path.relative_to(tmp_path)
            assert shipped.read_bytes() == path.read_bytes(), shipped


def test_summary_spans() -> None:
    assert _span([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8" and _span([]) == "none"


def test_field_line_outside_a_block_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "diary_001.txt"
    path.write_text("get_model: resnet50 in 1.00s\n    stray: 1\n")
    diary = parse_diary(path)
    assert [(i.line, i.reason.split(" ")[0]) for i in diary.unrecognised] == \
        [(2, "'name:")]
    assert diary.options == {}


def test_nul_byte_anywhere_is_a_format_error(tmp_path: Path) -> None:
    """A NUL after the first 4 KB is still binary: the file is refused, not parsed."""
    sim = simulate_run(tmp_path, SimSpec(epochs=1, seed=3))
    raw = sim.files[0].read_bytes()
    assert len(raw) > 6000
    sim.files[0].write_bytes(raw[:6000] + b"\x00" + raw[6000:])
    with pytest.raises(LogFormatError, match="NUL byte at offset 6000"):
        parse_diary(sim.files[0])


def test_runaway_line_is_cut_with_its_length(tmp_path: Path) -> None:
    sim = simulate_run(tmp_path, SimSpec(epochs=1, seed=3))
    lines = sim.files[0].read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "Epoch 1/" in line)
    lines.insert(at, "x" * 2_000_000)
    sim.files[0].write_text("\n".join(lines) + "\n")
    diary = parse_diary(sim.files[0])
    (issue,) = diary.unrecognised
    assert issue.line == at + 1 and len(issue.text) < 600
    assert issue.text.startswith("x" * 500) and "2,000,000 characters" in issue.text
    assert "2,000,000 characters" in issue.reason
    assert diary.epochs[1].train_objective is not None  # the lines around it still count
