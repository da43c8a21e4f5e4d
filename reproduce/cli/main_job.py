"""``fastap reproduce``: the project's main job, end to end, with a closing summary.

With no arguments it runs on what the project ships: the parity check on the saved MATLAB
fixtures, a synthetic full-size checkpoint written, converted and verified, the SIMULATED
sample diaries parsed, and the tables and figures made from them. Given real inputs
(``--models``, ``--logs``, ``--data``) it converts and verifies every checkpoint, evaluates
each converted model on the dataset its training options name, parses the real diaries and
fills the tables from all of it. The summary says what was regenerated from what and which
inputs would fill each remaining gap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from reproduce.errors import InputError
from reproduce.outputs import DEFAULT_OUT, command_dir, write_csv, write_text
from reproduce.paths import DEFAULT_FIXTURE_DIRS

log = logging.getLogger(__name__)

SYNTHETIC_FAMILY = "resnet18-pt-mcn"
# Folder names under --data that hold each dataset (ours first, then the official names).
DATA_FOLDERS = {
    "products": ("products", "Stanford_Online_Products"),
    "inshop": ("inshop", "In-shop", "InShop", "DeepFashion_InShop"),
    "vid": ("vid", "VehicleID", "VehicleID_V1.0"),
}


@dataclass
class Step:
    """One stage of the job: what it made, from what, and what would fill its gaps."""

    name: str
    status: str = "skipped"  # "ok", "failed", "skipped"
    made_from: str = ""
    outputs: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class JobResult:
    """All steps of one run and whether every check passed."""

    steps: list[Step]
    summary: str
    folder: Path

    @property
    def ok(self) -> bool:
        """True when no step failed."""
        return all(step.status != "failed" for step in self.steps)


def _parity(out: Path) -> Step:
    """Compare the FastAP port and Recall@K with the saved MATLAB values."""
    from reproduce.parity.run import run_parity

    step = Step("parity", made_from="saved MATLAB values shipped as " + ", ".join(
        d.name for d in DEFAULT_FIXTURE_DIRS))
    rows, ok = run_parity(list(DEFAULT_FIXTURE_DIRS), out)
    failed = [f"{r.case}/{r.quantity}" for r in rows if not r.passed]
    cases = len({r.case for r in rows})
    step.status = "ok" if ok else "failed"
    step.detail = f"{len(rows) - len(failed)}/{len(rows)} comparisons pass over {cases} cases"
    if failed:
        step.detail += "; failing: " + ", ".join(failed[:10])
    step.outputs.append(str(out / "parity" / "parity.csv"))
    return step


def _convert_and_verify(checkpoint: Path, models_out: Path) -> tuple[Step, Path]:
    """Convert one checkpoint, check it against the reference executor, write the model."""
    from converters.fastap.convert import convert_network
    from converters.fastap.model_file import save_model
    from converters.fastap.verify import comparison_table, make_inputs, verify_model
    from converters.mcn.reader import read_network

    step = Step(f"convert {checkpoint.name}", made_from=str(checkpoint))
    net = read_network(checkpoint)
    model, card = convert_network(net)
    target = models_out / f"{checkpoint.parent.name}__{checkpoint.stem}.pt"
    save_model(target, model, card)
    comparisons, ok = verify_model(net, model, make_inputs(net, batch=1, seed=0), "float32")
    table = comparison_table(comparisons, "float32")
    write_csv(target.with_suffix(".verify.csv"), table)
    worst = min((c.cosine for c in comparisons), default=float("nan"))
    worst_rel = max((c.rel_l2 for c in comparisons), default=float("nan"))
    step.status = "ok" if ok else "failed"
    step.detail = (f"family {card.family}, {len(comparisons)} variables against the "
                   f"reference: min cosine {worst:.7f}, max rel L2 {worst_rel:.2e}")
    step.outputs += [str(target), str(target.with_suffix(".verify.csv"))]
    return step, target


def _synthetic_checkpoint(folder: Path) -> Path:
    """Write the full-size synthetic checkpoint the default run converts."""
    from converters.fastap.synthetic import write_synthetic_checkpoint

    path = folder / "synthetic-products-FastAP-512-resnet18" / "net-epoch-3.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_synthetic_checkpoint(path, SYNTHETIC_FAMILY, dim=512, epoch=3, with_state=False,
                                   version="7", seed=0, compress=False)
    return path


def _find_checkpoints(models: Path) -> list[Path]:
    """Every ``.mat`` under ``models`` (released checkpoints are ``net-epoch-N.mat``)."""
    if not models.is_dir():
        raise InputError(f"{models}: --models must be a folder of .mat checkpoints")
    found = sorted(models.rglob("*.mat"))
    if not found:
        raise InputError(f"{models}: no .mat checkpoint found")
    return found


def _dataset_root(data: Path, dataset: str) -> Path | None:
    """The folder under ``data`` that holds ``dataset``, if any."""
    for name in DATA_FOLDERS.get(dataset, ()):
        if (data / name).is_dir():
            return data / name
    return None


def _evaluate(model_path: Path, data: Path | None, out: Path) -> Step:
    """Evaluate one converted model on the dataset named by its training options."""
    from reproduce.evaluation.evaluate import evaluate
    from reproduce.report.paper_tables import model_card_options

    dataset = str(model_card_options(model_path).get("dataset") or "")
    step = Step(f"evaluate {model_path.stem}", made_from=str(model_path))
    if dataset not in DATA_FOLDERS:
        step.gaps.append(f"the model card names no known dataset ({dataset!r}); evaluate it "
                         "with `fastap evaluate --dataset ...`")
        return step
    if data is None:
        step.gaps.append(f"--data DIR with {dataset or 'the dataset'} would give Recall@K "
                         "of this model")
        return step
    root = _dataset_root(data, dataset)
    if root is None:
        step.gaps.append(f"{data}: no folder named any of "
                         f"{list(DATA_FOLDERS.get(dataset, (dataset,)))} for this model")
        return step
    result = evaluate(model_path, dataset, root, out=out / "evaluations" / model_path.stem)
    step.status = "ok"
    step.detail = "; ".join(f"{name}: " + ", ".join(
        f"R@{k}={100 * r:.1f}" for k, r in zip(p["Ks"], p["recall"], strict=True))
        for name, p in result["protocols"].items())
    step.outputs.append(str(result["folder"]))
    return step


def _logs(paths: Sequence[Path] | None, out: Path) -> Step:
    """Parse the diaries (default: the SIMULATED samples) into per-epoch tables."""
    from reproduce.report.log_tables import SAMPLES_DIR, logs_command

    sources = list(paths) if paths else [SAMPLES_DIR]
    simulated = not paths
    step = Step("logs", made_from=("SIMULATED sample diaries in " if simulated else "diaries in ")
                + ", ".join(str(p) for p in sources))
    result = logs_command(sources, out / "logs")
    step.status = "ok"
    unknown = len(result.unrecognised)
    step.detail = (f"{len(result.runs)} runs, {len(result.epochs)} epoch rows, "
                   f"{unknown} unrecognised lines (listed in unrecognised.csv)")
    step.outputs += [str(p) for p in result.files.values()]
    if simulated:
        step.gaps.append("--logs DIR with the authors' diary_NNN.txt files would replace the "
                         "simulated curves and log columns")
    return step


def _tables_and_plots(out: Path, have_evaluations: bool, simulated_logs: bool) -> list[Step]:
    """Tables 1-3 and every figure their inputs allow."""
    from reproduce.report.paper_tables import tables_command
    from reproduce.report.plots import plots_command

    evaluations = out / "evaluations" if have_evaluations else None
    logs_label = "SIMULATED sample logs" if simulated_logs else "parsed logs"
    tables = Step("tables", made_from=f"published_results.csv (with its status column), "
                  f"{logs_label}" + (", evaluations" if have_evaluations else ""))
    written = tables_command(logs=[out / "logs"], evaluations=evaluations, out=out)
    tables.status = "ok"
    tables.outputs += [str(p) for p in written.values()]
    if not have_evaluations:
        tables.gaps.append("the 'evaluated' columns stay empty: released checkpoints "
                           "(--models) and datasets (--data) would fill them")
    plots = Step("plots", made_from=f"{logs_label}, tables, parity")
    made = plots_command(logs=[out / "logs"], tables=out / "tables",
                         parity=out / "parity" / "parity.csv", out=out)
    plots.status = "ok"
    for key, value in made.items():
        if isinstance(value, str):
            plots.gaps.append(f"{key}: {value}")
        else:
            plots.outputs += [str(p) for p in value]
    return [tables, plots]


def format_summary(steps: Sequence[Step]) -> str:
    """The closing summary: per step, status, source, result, outputs and gaps."""
    lines = ["# fastap reproduce: summary", ""]
    for step in steps:
        lines.append(f"## {step.name}: {step.status}")
        if step.made_from:
            lines.append(f"- from: {step.made_from}")
        if step.detail:
            lines.append(f"- result: {step.detail}")
        for path in step.outputs:
            lines.append(f"- wrote: {path}")
        for gap in step.gaps:
            lines.append(f"- gap: {gap}")
        lines.append("")
    failed = [s.name for s in steps if s.status == "failed"]
    lines.append("Overall: " + ("every check passed" if not failed
                                else "FAILED: " + ", ".join(failed)))
    return "\n".join(lines) + "\n"


def reproduce(models: str | os.PathLike[str] | None = None,
              logs: Sequence[str | os.PathLike[str]] | None = None,
              data: str | os.PathLike[str] | None = None,
              out: str | os.PathLike[str] | None = DEFAULT_OUT) -> JobResult:
    """Run the whole job (embedded defaults where an input is not given); see the module doc."""
    out_root = Path(out if out is not None else DEFAULT_OUT)
    data_path = Path(data) if data else None
    if data_path is not None and not data_path.is_dir():
        raise InputError(f"{data_path}: --data must be a folder")
    for path in logs or []:
        if not Path(path).exists():
            raise InputError(f"{path}: --logs path not found")
    real_checkpoints = _find_checkpoints(Path(models)) if models else None
    folder = command_dir(out_root, "reproduce", {
        "models": os.fspath(models) if models else None,
        "logs": [os.fspath(p) for p in logs or []], "data": os.fspath(data) if data else None,
        "out": os.fspath(out_root)})
    checkpoints = real_checkpoints or [_synthetic_checkpoint(folder / "synthetic")]
    steps: list[Step] = []
    stages = ("parity", "convert", "evaluate", "logs", "tables+plots")
    with tqdm(total=len(stages), desc="reproduce", unit="stage") as bar:
        bar.set_postfix_str("parity")
        steps.append(_parity(out_root))
        bar.update()
        bar.set_postfix_str("convert")
        converted = []
        for ckpt in checkpoints:
            step, target = _convert_and_verify(ckpt, folder / "models")
            if not real_checkpoints:
                step.made_from = f"SYNTHETIC {SYNTHETIC_FAMILY} checkpoint {ckpt}"
                step.gaps.append("--models DIR with the released net-epoch-N.mat files would "
                                 "convert and verify the real checkpoints")
            steps.append(step)
            converted.append(target)
        bar.update()
        bar.set_postfix_str("evaluate")
        if real_checkpoints:
            steps += [_evaluate(path, data_path, out_root) for path in converted]
        else:
            steps.append(Step("evaluate", gaps=[
                "--models DIR and --data DIR would evaluate the converted released models "
                "(a synthetic model has no meaningful Recall@K)"]))
        bar.update()
        bar.set_postfix_str("logs")
        steps.append(_logs([Path(p) for p in logs] if logs else None, out_root))
        bar.update()
        bar.set_postfix_str("tables+plots")
        have_evaluations = any(s.name.startswith("evaluate ") and s.status == "ok"
                               for s in steps)
        steps += _tables_and_plots(out_root, have_evaluations, simulated_logs=not logs)
        bar.update()
    summary = format_summary(steps)
    write_text(folder / "summary.md", summary)
    return JobResult(steps=steps, summary=summary, folder=folder)
