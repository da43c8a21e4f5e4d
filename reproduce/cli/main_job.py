"""``fastap reproduce``: the project's main job, end to end, with a closing summary.

With no arguments it runs on what the project ships: the parity check on the saved MATLAB
fixtures, a SMALL LOCAL training run (``fastap train``'s loop on a dataset generated here in
the SOP layout, a random ResNet-18 at 32 px, about a minute on the CPU: never the paper's
experiment, labelled so everywhere), its last checkpoint converted back through the
MatConvNet round trip and evaluated, a synthetic full-size checkpoint written, converted
and verified, the small run's diaries parsed, and the tables and figures made from them
(the SIMULATED sample diaries are used only when the small run fails). Given real inputs
(``--models``, ``--logs``, ``--data``) it converts and verifies every checkpoint, evaluates
each converted model on the dataset its training options name, parses the real diaries and
fills the tables from all of it. The summary says what was regenerated from what and which
inputs would fill each remaining gap.

Each stage, and each model within the convert and evaluate stages, runs on its own: bad
input in one (a truncated checkpoint, a folder with no FastAP diary) fails that stage with
its error in the summary while the others go on; ``summary.md`` is always written, and the
job's result is not ok when anything failed. An evaluation that is not the released
checkpoint on the full test set (another epoch, fewer images, a synthetic checkpoint) is
PARTIAL: the evaluate step, the tables, the figures and the closing line all say so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from converters.errors import MatConvNetError
from logs.errors import LogFormatError
from reproduce.errors import InputError
from reproduce.outputs import DEFAULT_OUT, command_dir, write_csv, write_text
from reproduce.paths import DEFAULT_FIXTURE_DIRS

log = logging.getLogger(__name__)

SYNTHETIC_FAMILY = "resnet18-pt-mcn"
#: Bad input in one stage or model: that stage fails, the job goes on. Anything else is a
#: bug and stops the job (after the summary is written).
INPUT_ERRORS = (InputError, MatConvNetError, LogFormatError)
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
    partial: list[str] = field(default_factory=list)  # values not from the released model


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


def guarded(step: Step, work: Callable[[Step], Any]) -> Any:
    """Run ``work(step)``; bad input marks the step failed with its error (returns None)."""
    try:
        return work(step)
    except INPUT_ERRORS as exc:
        log.error("%s: %s", step.name, exc)
        step.status = "failed"
        step.detail = f"error: {exc}"
        return None


def _parity(out: Path, step: Step) -> bool:
    """Compare the FastAP port and Recall@K with the saved MATLAB values; True when the
    parity CSV was written."""
    from reproduce.parity.run import run_parity

    step.made_from = "saved MATLAB values shipped as " + ", ".join(
        d.name for d in DEFAULT_FIXTURE_DIRS)
    rows, ok = run_parity(list(DEFAULT_FIXTURE_DIRS), out)
    failed = [f"{r.case}/{r.quantity}" for r in rows if not r.passed]
    cases = len({r.case for r in rows})
    step.status = "ok" if ok else "failed"
    step.detail = f"{len(rows) - len(failed)}/{len(rows)} comparisons pass over {cases} cases"
    if failed:
        step.detail += "; failing: " + ", ".join(failed[:10])
    step.outputs.append(str(out / "parity" / "parity.csv"))
    return True


def _convert_and_verify(checkpoint: Path, models_out: Path, step: Step) -> Path:
    """Convert one checkpoint, check it against the reference executor, write the model."""
    from converters.fastap.convert import convert_network
    from converters.fastap.model_file import save_model
    from converters.fastap.verify import comparison_table, make_inputs, verify_model
    from converters.mcn.reader import read_network

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
    return target


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


def _evaluate(model_path: Path, data: Path | None, out: Path, step: Step) -> bool:
    """Evaluate one converted model on the dataset named by its training options and say
    what the numbers were computed on (PARTIAL unless the released epoch on every test
    image); True when the results went where the tables look (a released configuration)."""
    from reproduce.evaluation.evaluate import evaluate
    from reproduce.report.paper_tables import model_card
    from reproduce.report.provenance import EvaluatedOn, scored_image_checks
    from reproduce.report.released_models import match_run

    card = model_card(model_path)
    options = dict(card.opts or {}) if card else {}
    dataset = str(options.get("dataset") or "")
    if dataset not in DATA_FOLDERS:
        step.gaps.append(f"the model card names no known dataset ({dataset!r}); evaluate it "
                         "with `fastap evaluate --dataset ...`")
        return False
    if data is None:
        step.gaps.append(f"--data DIR with {dataset or 'the dataset'} would give Recall@K "
                         "of this model")
        return False
    root = _dataset_root(data, dataset)
    if root is None:
        step.gaps.append(f"{data}: no folder named any of "
                         f"{list(DATA_FOLDERS.get(dataset, (dataset,)))} for this model")
        return False
    released = match_run(options, model_path.stem.replace("__", "/"))
    # only released configurations go where the tables look
    where = out / ("evaluations" if released else "evaluations_other") / model_path.stem
    result = evaluate(model_path, dataset, root, out=where)
    step.status = "ok"
    step.detail = "; ".join(f"{name}: " + ", ".join(
        f"R@{k}={100 * r:.1f}" for k, r in zip(p["Ks"], p["recall"], strict=True))
        for name, p in result["protocols"].items())
    step.outputs.append(str(result["folder"]))
    if released is None:
        step.detail += " (PARTIAL: not one of the released configurations, not in the tables)"
        step.partial.append(f"{model_path.stem}: not a released configuration")
        return False
    checks = scored_image_checks(list(result["dataset"].get("count_checks") or []), dataset, "")
    basis = EvaluatedOn(epoch=card.epoch if card else None,
                        images=sum(int(c["found"]) for c in checks) if checks else None,
                        published_images=sum(int(c["expected"]) for c in checks) if checks
                        else None, synthetic=bool(card and card.synthetic))
    described = basis.describe(released)
    step.detail += f" ({described})"
    if basis.reasons(released):
        step.partial.append(f"{model_path.stem}: {described.removeprefix('PARTIAL: ')}")
    return True


SMALL_RUN_LABEL = "SMALL LOCAL RUN (generated data, not the paper's experiment)"


def _small_run(folder: Path, step: Step) -> tuple[Any, Path, Path]:
    """Train the small local run; (result, data root, experiment folder)."""
    import time

    from reproduce.training.small_run import run_small

    step.made_from = ("a dataset generated here in the Stanford Online Products layout "
                      "(classes inside meta-classes) and a randomly initialised ResNet-18; "
                      + SMALL_RUN_LABEL)
    start = time.time()
    result, data = run_small(folder)
    step.status = "ok"
    recall = "; ".join(f"epoch {e}: " + ", ".join(f"{k}={v:.3f}" for k, v in r.items())
                       for e, r in sorted(result.recall.items()))
    step.detail = (f"{result.end_epoch} epochs in {time.time() - start:.0f} s; Avg train obj "
                   + ", ".join(f"{v:g}" for _, v in sorted(result.objectives.items()))
                   + f"; Recall@K {recall}")
    step.outputs += [str(result.folder)]
    return result, data, result.folder


def _evaluate_small(model_path: Path, small: tuple[Any, Path, Path], step: Step) -> None:
    """The converted small-run model, evaluated at the run's image size on its test set:
    Recall@K must equal what the run printed for that epoch (the round trip loses nothing)."""
    from torch import nn

    from converters.fastap.model_file import load_model
    from reproduce.evaluation.datasets import load_dataset
    from reproduce.training.data import ImageSet
    from reproduce.training.run import evaluate_epoch
    from reproduce.training.small_run import small_options

    result, data, _ = small
    epoch = max(result.checkpoints)
    model, card = load_model(model_path)
    opts = small_options()
    model.base.avgpool = nn.AdaptiveAvgPool2d(1)  # the run's 32 px input (7x7 pool at 224)
    ds = load_dataset("products", data)
    images = ImageSet(ds.paths, opts.image_size, ds.pre_resize, card.input.average_image)
    (scored,), _, _ = evaluate_epoch(model, ds, images, "cpu", 0)
    printed = {f"R@{k}": float(f"{r:.3f}") for k, r in zip(scored["Ks"], scored["recall"],
                                                            strict=True)}
    same = printed == result.recall.get(epoch)
    step.status = "ok" if same else "failed"
    step.detail = (f"{SMALL_RUN_LABEL}, epoch {epoch} through net-epoch-{epoch}.mat and "
                   f"fastap convert: " + ", ".join(f"{k}={v:.3f}" for k, v in printed.items())
                   + f", MAP@R={scored['map_at_r']:.3f}; "
                   + ("equal to the run's own evaluation" if same else
                      f"DIFFERS from the run's own evaluation {result.recall.get(epoch)}"))
    step.partial.append("small local run: generated data, not a released model, not in the "
                        "tables")


def _logs(paths: Sequence[Path] | None, out: Path, step: Step) -> bool:
    """Parse the diaries (default: the SIMULATED samples) into per-epoch tables; True when
    ``out/logs`` now holds them (even if some file beside the others could not be read)."""
    from reproduce.report.log_tables import logs_command

    if not paths:
        step.gaps.append("--logs DIR with the authors' diary_NNN.txt files would replace the "
                         "simulated curves and log columns")
    result = logs_command(list(paths) if paths else None, out / "logs")
    unknown = len(result.unrecognised)
    step.status = "ok"
    step.detail = (f"{len(result.runs)} runs, {len(result.epochs)} epoch rows, "
                   f"{unknown} unrecognised lines (listed in unrecognised.csv)")
    step.outputs += [str(p) for p in result.files.values()]
    if result.bad_files:
        step.status = "failed"
        step.detail += ("; NOT READ (the other files were used): "
                        + "; ".join(bad.error for bad in result.bad_files))
    return True


def _tables(out: Path, logs_ready: bool, have_evaluations: bool, logs_label: str,
            step: Step) -> None:
    """Tables 1-3 from the published numbers, the logs and the evaluations this run made."""
    import pandas as pd

    from reproduce.report.paper_tables import partial_notes, tables_command

    step.made_from = ("published_results.csv (with its status column)"
                      + (f", {logs_label}" if logs_ready else "")
                      + (", evaluations" if have_evaluations else ""))
    written = tables_command(logs=[out / "logs"] if logs_ready else None,
                             evaluations=out / "evaluations" if have_evaluations else None,
                             out=out)
    step.status = "ok"
    step.outputs += [str(p) for p in written.values()]
    if not logs_ready:
        step.gaps.append("the log columns stay empty: the logs stage gave no tables")
    if not have_evaluations:
        step.gaps.append("the 'evaluated' columns stay empty: released checkpoints "
                         "(--models) and datasets (--data) would fill them")
    for path in written.values():
        step.partial += [f"{path.stem}: {note}" for note in partial_notes(pd.read_csv(path))]
    if step.partial:
        step.detail = (f"{len(step.partial)} configuration(s) with PARTIAL evaluated values, "
                       "marked [partial] and left out of the differences to published")


def _plots(out: Path, logs_ready: bool, tables_ready: bool, parity_ready: bool,
           logs_label: str, step: Step) -> None:
    """Every figure the stages before made inputs for."""
    from reproduce.report.plots import plots_command

    used = [label for label, ready in ((logs_label, logs_ready), ("tables", tables_ready),
                                       ("parity", parity_ready)) if ready]
    step.made_from = ", ".join(used) or "nothing (every earlier stage failed)"
    made = plots_command(logs=[out / "logs"] if logs_ready else None,
                         tables=out / "tables" if tables_ready else None,
                         parity=out / "parity" / "parity.csv" if parity_ready else None,
                         out=out)
    step.status = "ok"
    for key, value in made.items():
        if isinstance(value, str):
            step.gaps.append(f"{key}: {value}")
        else:
            step.outputs += [str(p) for p in value]


def format_summary(steps: Sequence[Step], interrupted: str | None = None) -> str:
    """The closing summary: per step, status, source, result, outputs and gaps; the last
    line says whether every check passed and whether any evaluated value is PARTIAL."""
    lines = ["# fastap reproduce: summary", ""]
    for step in steps:
        lines.append(f"## {step.name}: {step.status}")
        if step.made_from:
            lines.append(f"- from: {step.made_from}")
        if step.detail:
            lines.append(f"- result: {step.detail}")
        for note in step.partial:
            lines.append(f"- PARTIAL: {note}")
        for path in step.outputs:
            lines.append(f"- wrote: {path}")
        for gap in step.gaps:
            lines.append(f"- gap: {gap}")
        lines.append("")
    failed = [s.name for s in steps if s.status == "failed"]
    partial = [s.name for s in steps if s.partial and s.name.startswith("evaluate ")]
    if interrupted:
        overall = f"INTERRUPTED by an internal error ({interrupted})"
    elif failed:
        overall = "FAILED: " + ", ".join(failed)
    else:
        overall = "every check passed"
    if partial:
        overall += ("; PARTIAL evaluations, NOT the released models on the full test sets "
                    "(no comparison with the published numbers): " + ", ".join(partial))
    lines.append("Overall: " + overall)
    return "\n".join(lines) + "\n"


def reproduce(models: str | os.PathLike[str] | None = None,
              logs: Sequence[str | os.PathLike[str]] | None = None,
              data: str | os.PathLike[str] | None = None,
              out: str | os.PathLike[str] | None = DEFAULT_OUT) -> JobResult:
    """Run the whole job (embedded defaults where an input is not given); see the module doc.

    Bad arguments (a missing folder, no checkpoint under ``--models``) raise ``InputError``
    before anything is written; from then on ``summary.md`` is always written.
    """
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
    steps: list[Step] = []
    interrupted = None
    try:
        _run_stages(steps, folder, out_root, real_checkpoints,
                    [Path(p) for p in logs] if logs else None, data_path)
    except BaseException as exc:  # a bug or Ctrl-C: say so in the summary, then re-raise
        interrupted = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = format_summary(steps, interrupted)
        write_text(folder / "summary.md", summary)
    return JobResult(steps=steps, summary=summary, folder=folder)


def _run_stages(steps: list[Step], folder: Path, out_root: Path,
                real_checkpoints: list[Path] | None, logs: list[Path] | None,
                data_path: Path | None) -> None:
    """The stages in order, each appended to ``steps`` as it starts."""
    stages = ("parity", "train", "convert", "evaluate", "logs", "tables", "plots")
    with tqdm(total=len(stages), desc="reproduce", unit="stage") as bar:
        bar.set_postfix_str("parity")
        step = Step("parity")
        steps.append(step)
        parity_ready = guarded(step, lambda s: _parity(out_root, s)) is not None
        bar.update()
        bar.set_postfix_str("train")
        small = None
        if not real_checkpoints:
            step = Step("train SMALL LOCAL RUN")
            steps.append(step)
            small = guarded(step, lambda s: _small_run(folder / "small_run", s))
        bar.update()
        bar.set_postfix_str("convert")
        if small is not None:
            ckpt = small[2] / f"net-epoch-{max(small[0].checkpoints)}.mat"
            step = Step(f"convert SMALL LOCAL RUN {ckpt.name}", made_from=str(ckpt))
            steps.append(step)
            target = guarded(step, lambda s: _convert_and_verify(ckpt, folder / "models_small",
                                                                   s))
            if target is not None and step.status == "ok":
                step = Step(f"evaluate SMALL LOCAL RUN {target.stem}", made_from=str(target))
                steps.append(step)
                guarded(step, lambda s: _evaluate_small(target, small, s))
        checkpoints = real_checkpoints or [_synthetic_checkpoint(folder / "synthetic")]
        converted = []
        for ckpt in checkpoints:
            step = Step(f"convert {ckpt.name}", made_from=str(ckpt))
            steps.append(step)
            if not real_checkpoints:
                step.made_from = f"SYNTHETIC {SYNTHETIC_FAMILY} checkpoint {ckpt}"
                step.gaps.append("--models DIR with the released net-epoch-N.mat files would "
                                 "convert and verify the real checkpoints")
            target = guarded(step, lambda s, c=ckpt: _convert_and_verify(c, folder / "models",
                                                                           s))
            if target is not None and step.status == "ok":
                converted.append(target)
            elif target is not None:
                step.gaps.append("not evaluated: the converted model does not match the "
                                 "reference executor")
        bar.update()
        bar.set_postfix_str("evaluate")
        have_evaluations = False
        if real_checkpoints:
            for path in converted:
                step = Step(f"evaluate {path.stem}", made_from=str(path))
                steps.append(step)
                if guarded(step, lambda s, p=path: _evaluate(p, data_path, out_root, s)):
                    have_evaluations = True
        else:
            steps.append(Step("evaluate", gaps=[
                "--models DIR and --data DIR would evaluate the converted released models "
                "(a synthetic model has no meaningful Recall@K)"]))
        bar.update()
        bar.set_postfix_str("logs")
        if logs:
            logs_label, made_from, log_paths = "parsed logs", "diaries in " + ", ".join(
                str(p) for p in logs), logs
        elif small is not None:
            logs_label = f"{SMALL_RUN_LABEL} logs"
            made_from = f"the diaries of the {SMALL_RUN_LABEL} in {small[2]}"
            log_paths = [small[2]]
        else:
            logs_label = "SIMULATED sample logs"
            made_from, log_paths = f"SIMULATED sample diaries in {_samples_dir()}", None
        step = Step("logs", made_from=made_from)
        steps.append(step)
        logs_ready = bool(guarded(step, lambda s: _logs(log_paths, out_root, s)))
        if log_paths and not logs:
            step.gaps.append("--logs DIR with the authors' diary_NNN.txt files would replace "
                             "the small local run's curves and log columns")
        bar.update()
        bar.set_postfix_str("tables")
        step = Step("tables")
        steps.append(step)
        guarded(step, lambda s: _tables(out_root, logs_ready, have_evaluations, logs_label, s))
        tables_ready = step.status == "ok"
        bar.update()
        bar.set_postfix_str("plots")
        step = Step("plots")
        steps.append(step)
        guarded(step, lambda s: _plots(out_root, logs_ready, tables_ready, parity_ready,
                                       logs_label, s))
        bar.update()


def _samples_dir() -> Path:
    """The shipped SIMULATED sample diaries."""
    from reproduce.report.log_tables import SAMPLES_DIR

    return SAMPLES_DIR
