"""``fastap tables``: the paper's Tables 1-3 beside what the logs and converted models give.

For every FastAP configuration of the registry (the ten released models) and every recall
column of its table, one row holds: the published value and its ``status`` (from
``published_results.csv``, replaceable with ``--published``), the value in the training
log at the released epoch, the value from evaluating the converted model, and the
differences. Competitor rows are copied as published. Missing inputs stay empty (the
Markdown/LaTeX renderings say "missing"), never zero. All values are percent.

Inputs:
- logs: folders written by ``fastap logs`` (``epochs.csv`` + ``runs.csv``) or folders of
  diaries (parsed on the fly). Diary recall is a fraction (``%.3f``) and becomes percent.
- evaluations: CSV files under a folder, searched recursively (``fastap evaluate`` writes
  ``<out>/evaluate/metrics.csv``; the ``recall.csv`` of earlier versions is still read).
  Accepted columns: either ``metric`` + ``value`` (percent, or a fraction when the row's
  ``unit`` is ``fraction``, as ``fastap evaluate`` writes it), or ``K`` + ``recall``
  (fraction or percent); a VehicleID metric without its subset (``R@1``, ``MAP@R``) takes it
  from ``protocol``/``subset`` (``vid-small-authors`` -> ``small R@1``); rows whose ``family`` is
  not ``authors`` (e.g. the re-ID protocol) are left out, the paper reports the authors'
  protocol. The configuration comes from ``dataset`` + ``arch``/``backbone`` +
  ``batch_size``/``batchSize`` + ``dim`` columns, else from the ``model`` column: a registry
  key (``products-resnet50-M256-D512``), a converted ``.pt`` whose card holds the training
  ``opts``, or a path that follows the experiment-folder naming.

Evaluated metrics the paper does not report (MAP@R, R-precision, NMI) get their own columns,
after the Recall@K ones, in a table where some evaluation has them; their published cell is
``n/r`` (status ``not reported``), never a number.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from logs.frames import runs_table
from reproduce.errors import InputError
from reproduce.outputs import command_dir, write_csv, write_text
from reproduce.paths import PUBLISHED_DIR
from reproduce.report.log_tables import read_logs
from reproduce.report.released_models import (
    METRICS,
    RELEASED_MODELS,
    ReleasedModel,
    find_model,
    match_run,
)

log = logging.getLogger(__name__)

PUBLISHED_CSV = PUBLISHED_DIR / "published_results.csv"
TABLE_FILES = {1: "table1_products", 2: "table2_inshop", 3: "table3_vid"}
_DATASETS = {1: "products", 2: "inshop", 3: "vid"}
COLUMNS = ["table", "dataset", "method", "backbone", "batch_size", "dim", "metric",
           "published", "status", "source", "released_epoch", "logs_value", "logs_run",
           "logs_epoch", "evaluated", "evaluated_source", "logs_minus_published",
           "evaluated_minus_published", "evaluated_minus_logs", "note"]
_STATUS_TAG = {"secondary": "sec", "conflicting": "conf", "recollection": "recol",
               "missing": "missing"}
NOT_REPORTED = "not reported"
"""Status of an evaluated metric the paper has no column for."""
EXTRA_METRICS = ("MAP@R", "R-precision", "NMI")
"""Evaluated metrics beyond the paper's Recall@K, in column order."""
_PUBLISHED_COLUMNS = {"table", "dataset", "method", "backbone", "batch_size", "dim", "metric",
                      "value", "status", "source"}


@dataclass
class LogRuns:
    """Runs (options) and their per-epoch values, from any number of log folders."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    sources: list[str] = field(default_factory=list)


def load_published(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The published numbers (default: the shipped CSV); checks the columns."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    if not path.is_file():
        raise InputError(f"{path}: published results CSV not found")
    frame = pd.read_csv(path)
    missing = _PUBLISHED_COLUMNS - set(frame.columns)
    if missing:
        raise InputError(f"{path}: missing columns {sorted(missing)} (expected "
                         f"{sorted(_PUBLISHED_COLUMNS)})")
    frame["status"] = frame["status"].fillna("missing")
    return frame


def load_logs(folders: Sequence[str | os.PathLike[str]]) -> LogRuns:
    """Runs and epochs from ``fastap logs`` output folders or from diary folders."""
    runs_frames, epoch_frames, sources = [], [], []
    for folder in folders:
        folder = Path(folder)
        if (folder / "epochs.csv").is_file() and (folder / "runs.csv").is_file():
            runs_frames.append(pd.read_csv(folder / "runs.csv"))
            epoch_frames.append(pd.read_csv(folder / "epochs.csv"))
        else:
            runs, epochs, _ = read_logs([folder])
            runs_frames.append(runs_table(runs))
            epoch_frames.append(epochs)
        sources.append(str(folder))
    runs = pd.concat(runs_frames, ignore_index=True) if runs_frames else pd.DataFrame()
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    return LogRuns(runs=runs, epochs=epochs, sources=sources)


def _run_options(row: pd.Series) -> dict[str, Any]:
    """A runs.csv row's options (``options_json``, else the option columns)."""
    text = row.get("options_json")
    if isinstance(text, str) and text:
        return json.loads(text)
    return {k: row.get(k) for k in ("dataset", "arch", "batchSize", "dim")}


def choose_log_values(model: ReleasedModel, logs: LogRuns | None
                      ) -> tuple[dict[str, float], str, str]:
    """Recall (percent) at the released epoch from the best matching run, its name, a note."""
    if logs is None or logs.runs.empty:
        return {}, "", "no logs given"
    matches = []
    for _, row in logs.runs.iterrows():
        if match_run(_run_options(row), str(row["run"])) == model:
            matches.append(row)
    if not matches:
        return {}, "", "no log run with this configuration"
    matches.sort(key=lambda r: bool(r.get("simulated")) is True)  # real logs first
    notes = []
    for row in matches:
        name = str(row["run"])
        epochs = logs.epochs[(logs.epochs["run"] == name)
                             & (logs.epochs["epoch"] == model.epoch)]
        values = {}
        if not epochs.empty:
            last = epochs.iloc[-1]
            values = {m: float(last[m]) * 100.0 for m in METRICS[model.dataset]
                      if m in last.index and _present(last[m])}
        if values:
            note = "SIMULATED log" if bool(row.get("simulated")) else ""
            if len(matches) > 1:
                note = (note + "; " if note else "") + f"{len(matches)} runs match, using {name}"
            return values, name, note
        notes.append(f"{name}: epoch {model.epoch} not evaluated in the log")
    return {}, str(matches[0]["run"]), "; ".join(notes)


def _present(value: Any) -> bool:
    """Not None/NaN/empty."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip()) and value.strip().lower() != "nan"
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def load_evaluations(folder: str | os.PathLike[str] | None) -> pd.DataFrame:
    """Evaluation results as rows ``key``, ``metric``, ``value`` (percent), ``source``."""
    empty = pd.DataFrame(columns=["key", "metric", "value", "source"])
    if folder is None:
        return empty
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: evaluations folder not found")
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.csv"))
    rows = []
    cards: dict[str, dict[str, Any]] = {}
    for path in files:
        frame = pd.read_csv(path)
        for _, row in frame.iterrows():
            parsed = _evaluation_row(row, path, cards)
            if parsed is not None:
                rows.append(parsed)
    return pd.DataFrame(rows, columns=empty.columns) if rows else empty


_VID_SUBSET = re.compile(r"(small|medium|large)", re.IGNORECASE)


def model_card_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training options in a converted model's card (``card_json["opts"]``), or ``{}``.

    Reads the ``.pt`` memory-mapped so the weights are not loaded.
    """
    path = Path(path)
    if path.suffix != ".pt" or not path.is_file():
        return {}
    import torch  # only needed for converted models; keeps `fastap tables` light otherwise

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        card = json.loads(payload.get("card_json") or "{}")
    except (OSError, RuntimeError, ValueError, AttributeError) as exc:
        log.warning("%s: cannot read the model card (%s)", path, exc)
        return {}
    return dict(card.get("opts") or {})


def _evaluation_model(row: pd.Series, cards: dict[str, dict[str, Any]]) -> ReleasedModel | None:
    """The released configuration an evaluation row is about."""
    dataset = str(row.get("dataset", "") or "")
    arch = row.get("arch", row.get("backbone"))
    batch = row.get("batch_size", row.get("batchSize"))
    if dataset and _present(arch) and _present(batch) and _present(row.get("dim")):
        return find_model(dataset, str(arch), batch, row.get("dim"))
    name = str(row.get("model", "") or "")
    if not name:
        return None
    by_key = next((m for m in RELEASED_MODELS if m.key == name), None)
    if by_key is not None:
        return by_key
    if name not in cards:
        cards[name] = model_card_options(name)
    return match_run(cards[name], name)


def _evaluation_row(row: pd.Series, path: Path, cards: dict[str, dict[str, Any]]
                    ) -> dict[str, Any] | None:
    """One evaluation CSV row normalised, or None if it is not a released configuration's
    result under the authors' protocol (rows of another ``family``, e.g. ``reid``, are not
    what the paper's tables report)."""
    if _present(row.get("family")) and str(row["family"]) != "authors":
        return None
    model = _evaluation_model(row, cards)
    if model is None:
        return None
    if _present(row.get("metric")) and _present(row.get("value")):
        metric, value = str(row["metric"]), float(row["value"])
        if str(row.get("unit", "") or "") == "fraction":
            value *= 100.0
    elif _present(row.get("K")) and _present(row.get("recall")):
        metric = f"R@{int(float(row['K']))}"
        value = float(row["recall"])
        value = value * 100.0 if value <= 1.0 else value
    else:
        return None
    if model.dataset == "vid" and _VID_SUBSET.match(metric) is None:
        where = str(row.get("subset", "") or "") + " " + str(row.get("protocol", "") or "")
        found = _VID_SUBSET.search(where)
        if found is None:
            return None
        metric = f"{found.group(1).lower()} {metric}"
    return {"key": model.key, "metric": metric, "value": value, "source": str(path)}


def _table_metrics(table: int, evaluations: pd.DataFrame) -> list[str]:
    """The paper's Recall@K columns of a table, then the extra metrics some evaluation of
    one of its configurations has (per VehicleID subset)."""
    dataset = _DATASETS[table]
    keys = {m.key for m in RELEASED_MODELS if m.table == table}
    found = set(evaluations.loc[evaluations["key"].isin(keys), "metric"])
    prefixes = sorted({m.split(" ")[0] for m in METRICS[dataset] if " " in m},
                      key=[m.split(" ")[0] for m in METRICS[dataset]].index) or [""]
    extra = [f"{p} {name}".strip() for p in prefixes for name in EXTRA_METRICS]
    return METRICS[dataset] + [m for m in extra if m in found]


def build_table(table: int, published: pd.DataFrame, logs: LogRuns | None,
                evaluations: pd.DataFrame) -> pd.DataFrame:
    """The long-form rows of one table (FastAP configurations first, then competitors)."""
    dataset = _DATASETS[table]
    rows: list[dict[str, Any]] = []
    pub = published[published["table"] == table]
    metrics = _table_metrics(table, evaluations)
    for model in (m for m in RELEASED_MODELS if m.table == table):
        log_values, log_run, log_note = choose_log_values(model, logs)
        for metric in metrics:
            reported = metric in METRICS[dataset]
            match = pub[(pub["method"] == "FastAP") & (pub["backbone"] == model.backbone)
                        & (pub["batch_size"].astype("float") == model.batch_size)
                        & (pub["dim"].astype("float") == model.dim) & (pub["metric"] == metric)]
            value = float(match["value"].iloc[0]) if not match.empty and _present(
                match["value"].iloc[0]) else None
            status = str(match["status"].iloc[0]) if not match.empty else (
                "missing" if reported else NOT_REPORTED)
            source = str(match["source"].iloc[0]) if not match.empty else (
                "not in the published file" if reported else "the paper reports Recall@K only")
            evaluated = evaluations[(evaluations["key"] == model.key)
                                    & (evaluations["metric"] == metric)]
            ev_value = float(evaluated["value"].iloc[-1]) if not evaluated.empty else None
            lg = log_values.get(metric)
            rows.append({
                "table": table, "dataset": dataset, "method": "FastAP",
                "backbone": model.backbone, "batch_size": model.batch_size, "dim": model.dim,
                "metric": metric, "published": value, "status": status, "source": source,
                "released_epoch": model.epoch, "logs_value": lg,
                "logs_run": log_run if lg is not None else "",
                "logs_epoch": model.epoch if lg is not None else None,
                "evaluated": ev_value,
                "evaluated_source": str(evaluated["source"].iloc[-1]) if ev_value is not None
                else "",
                "logs_minus_published": _diff(lg, value),
                "evaluated_minus_published": _diff(ev_value, value),
                "evaluated_minus_logs": _diff(ev_value, lg),
                "note": (log_note if lg is None or log_note else "") if reported else "",
            })
    for _, row in pub[pub["method"] != "FastAP"].iterrows():
        rows.append({
            "table": table, "dataset": dataset, "method": row["method"],
            "backbone": row["backbone"],
            "batch_size": row["batch_size"] if _present(row["batch_size"]) else None,
            "dim": row["dim"] if _present(row["dim"]) else None, "metric": row["metric"],
            "published": float(row["value"]) if _present(row["value"]) else None,
            "status": row["status"], "source": row["source"], "note": "competitor, as published",
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("published", "logs_value", "evaluated", "logs_minus_published",
                   "evaluated_minus_published", "evaluated_minus_logs"):
        frame[column] = frame[column].astype("float64").round(2)
    for column in ("released_epoch", "logs_epoch"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _diff(a: float | None, b: float | None) -> float | None:
    """a - b, or None when either is missing."""
    return None if a is None or b is None else round(a - b, 2)


# ---- renderings -------------------------------------------------------------------------------
def _cell(value: Any, status: str | None = None) -> str:
    """A value for Markdown/LaTeX: one decimal, ``missing`` when absent, status tag."""
    if status == NOT_REPORTED and not _present(value):
        return "n/r"
    text = f"{float(value):.1f}" if _present(value) else "missing"
    if status is not None and not (text == "missing" and status == "missing"):
        text += f" [{_STATUS_TAG.get(status, status)}]"
    return text


def _signed(value: Any) -> str:
    """A difference with its sign (``+0.4``, ``-1.3``), ``missing`` when absent."""
    return f"{float(value):+.1f}" if _present(value) else "missing"


def wide_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Rows for the renderings: per configuration, published/logs/evaluated lines."""
    metrics = list(dict.fromkeys(frame["metric"]))
    body: list[list[str]] = []
    keys = ["method", "backbone", "batch_size", "dim"]
    for _, group in frame.groupby(keys, sort=False, dropna=False):
        first = group.iloc[0]
        label = f"{first['method']} {first['backbone']}"
        if _present(first["batch_size"]):
            label += f" M={int(first['batch_size'])}"
        if _present(first["dim"]):
            label += f" D={int(first['dim'])}"
        by_metric = {r["metric"]: r for _, r in group.iterrows()}

        def line(what: str, column: str, with_status: bool = False,
                 by_metric: dict[str, Any] = by_metric) -> list[str]:
            return [what] + [_cell(by_metric[m][column],
                                   by_metric[m]["status"] if with_status else None)
                             if m in by_metric else "" for m in metrics]

        body.append([label] + line("published", "published", True))
        if first["method"] == "FastAP":
            epoch = int(first["released_epoch"])
            simulated = group["note"].astype(str).str.contains("SIMULATED").any()
            what = f"logs @ epoch {epoch}" + (" (SIMULATED)" if simulated else "")
            body.append([""] + line(what, "logs_value"))
            body.append([""] + line("converted model", "evaluated"))
            for column, label in (("logs_minus_published", "logs - published"),
                                  ("evaluated_minus_published", "model - published")):
                if group[column].notna().any():
                    body.append([""] + [label] + [_signed(by_metric[m][column])
                                                  if m in by_metric else "" for m in metrics])
    return ["configuration", "source", *metrics], body


def render_markdown(frame: pd.DataFrame, title: str) -> str:
    """A Markdown table with the status legend and a note on missing values."""
    header, body = wide_rows(frame)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", _legend(frame)]
    return "\n".join(lines) + "\n"


def render_latex(frame: pd.DataFrame, title: str) -> str:
    """A LaTeX tabular (booktabs) with the same content as the Markdown rendering."""
    header, body = wide_rows(frame)

    def esc(text: str) -> str:
        return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&")
                .replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
                .replace("@", "@"))

    lines = [f"% {title}", r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", "% " + _legend(frame).replace("\n", "\n% ")]
    return "\n".join(lines) + "\n"


def _legend(frame: pd.DataFrame) -> str:
    """What the tags mean; says when log values are simulated."""
    text = ("Status of published values: [sec] secondary source, [conf] conflicting sources, "
            "[recol] recollection (unverified), [missing] no value found. Values in percent; "
            "'missing' means the input was not available, never zero.")
    if (frame["status"] == NOT_REPORTED).any():
        text += ("\nn/r: not reported in the paper (MAP@R, R-precision and NMI are evaluated "
                 "only; the paper reports Recall@K).")
    if frame["note"].astype(str).str.contains("SIMULATED").any():
        text += ("\nLog values marked in the CSV's note column as SIMULATED come from the "
                 "simulated sample diaries, not from the authors' logs.")
    return text


def tables_command(logs: Sequence[str | os.PathLike[str]] | None = None,
                   evaluations: str | os.PathLike[str] | None = None,
                   published: str | os.PathLike[str] | None = None,
                   out: str | os.PathLike[str] | None = "out",
                   arguments: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``table{1,2,3}_*.csv`` (+ ``.md``, ``.tex``) under ``<out>/tables/``."""
    published_frame = load_published(published)
    log_runs = load_logs(logs) if logs else None
    evaluation_frame = load_evaluations(evaluations)
    frames = {table: build_table(table, published_frame, log_runs, evaluation_frame)
              for table in TABLE_FILES}  # every input read before anything is written
    folder = command_dir(out, "tables", arguments or {
        "logs": [str(p) for p in logs or []], "evaluations": str(evaluations or ""),
        "published": str(published or PUBLISHED_CSV), "out": str(out)})
    written: dict[str, Path] = {}
    for table, stem in TABLE_FILES.items():
        frame = frames[table]
        title = f"Table {table}: {_DATASETS[table]} (Recall@K, %)"
        written[stem] = write_csv(folder / f"{stem}.csv", frame)
        write_text(folder / f"{stem}.md", render_markdown(frame, title))
        write_text(folder / f"{stem}.tex", render_latex(frame, title))
    return written
