"""``fastap tables``: the paper's Tables 1-3 beside what the logs and converted models give.

For every FastAP configuration of the registry (the ten released models) and every recall
column of its table, one row holds: the published value and its ``status`` (from
``published_results.csv``, replaceable with ``--published``), the value in the training
log at the released epoch, the value from evaluating the converted model, and the
differences. Competitor rows are copied as published. Missing inputs stay empty (the
Markdown/LaTeX renderings say "missing"), never zero. All values are percent.

Each evaluated value carries what it was computed on (``evaluated_epoch``,
``evaluated_images``, ``published_images``, ``evaluated_synthetic``, ``evaluated_on``; see
:mod:`reproduce.report.provenance`). One that is not the released checkpoint on the full
test set is ``evaluated_partial``: the renderings tag it ``[partial]`` and explain it under
the table, and it is left out of ``evaluated_minus_published`` and ``evaluated_minus_logs``.

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
  ``opts``, or a path that follows the experiment-folder naming. Optional columns ``epoch``,
  ``images``, ``published_images``, ``synthetic`` state what a value was computed on.

Evaluated metrics the paper does not report (MAP@R, R-precision, NMI) get their own columns,
after the Recall@K ones, in a table where some evaluation has them; their published cell is
``n/r`` (status ``not reported``), never a number.

Bad input is an ``InputError`` naming the file (and line and column): a CSV that is binary
or lacks the columns, a cell that is not a number, an evaluation row naming no released
configuration, a ``--logs`` folder with neither ``fastap logs`` output nor a diary.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from converters.fastap.card import ModelCard
from logs.frames import runs_table
from reproduce.errors import InputError, MatConvNetError
from reproduce.outputs import command_dir, write_csv, write_text
from reproduce.paths import PUBLISHED_DIR
from reproduce.report.csv_input import check_numeric, line_of, number, present, read_csv_file
from reproduce.report.log_tables import read_logs
from reproduce.report.provenance import evaluated_on
from reproduce.report.released_models import (
    METRICS,
    RELEASED_MODELS,
    ReleasedModel,
    find_model,
    match_options,
    match_run,
)

log = logging.getLogger(__name__)

PUBLISHED_CSV = PUBLISHED_DIR / "published_results.csv"
TABLE_FILES = {1: "table1_products", 2: "table2_inshop", 3: "table3_vid"}
_DATASETS = {1: "products", 2: "inshop", 3: "vid"}
COLUMNS = ["table", "dataset", "method", "backbone", "batch_size", "dim", "metric",
           "published", "status", "source", "released_epoch", "logs_value", "logs_run",
           "logs_epoch", "evaluated", "evaluated_source", "evaluated_epoch",
           "evaluated_images", "published_images", "evaluated_synthetic", "evaluated_partial",
           "evaluated_on", "logs_minus_published",
           "evaluated_minus_published", "evaluated_minus_logs", "note"]
_STATUS_TAG = {"secondary": "sec", "conflicting": "conf", "recollection": "recol",
               "missing": "missing"}
NOT_REPORTED = "not reported"
"""Status of an evaluated metric the paper has no column for."""
EXTRA_METRICS = ("MAP@R", "R-precision", "NMI")
"""Evaluated metrics beyond the paper's Recall@K, in column order."""


def is_extra_metric(metric: str) -> bool:
    """Whether a table metric is one the paper does not report (``MAP@R``, ``small NMI``)."""
    return str(metric).split(" ")[-1] in EXTRA_METRICS


def extra_metrics_in(frame: pd.DataFrame) -> list[str]:
    """The :data:`EXTRA_METRICS` some row of a table has (any VehicleID subset), in order."""
    found = {str(m).split(" ")[-1] for m in frame["metric"] if is_extra_metric(m)}
    return [m for m in EXTRA_METRICS if m in found]


def table_title(table: int, frame: pd.DataFrame) -> str:
    """A table's heading: ``(Recall@K, %)``, naming the evaluated-only metrics it also has."""
    extra = extra_metrics_in(frame)
    what = "Recall@K, %" if not extra else (
        f"Recall@K as published; {', '.join(extra)} evaluated only (n/r in the paper); %")
    return f"Table {table}: {_DATASETS[table]} ({what})"


_PUBLISHED_COLUMNS = {"table", "dataset", "method", "backbone", "batch_size", "dim", "metric",
                      "value", "status", "source"}


@dataclass
class LogRuns:
    """Runs (options) and their per-epoch values, from any number of log folders."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    sources: list[str] = field(default_factory=list)


def load_published(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The published numbers (default: the shipped CSV); checks the columns and numbers."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    frame = read_csv_file(path, "published results CSV")
    missing = _PUBLISHED_COLUMNS - set(frame.columns)
    if missing:
        raise InputError(f"{path}: missing columns {sorted(missing)} (expected "
                         f"{sorted(_PUBLISHED_COLUMNS)})")
    check_numeric(frame, path, ("table", "batch_size", "dim", "value"))
    frame["status"] = frame["status"].fillna("missing")
    return frame


def published_metrics(options: dict[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers for the released configuration a run's options name, or None.

    For a model card (``ModelCard.metrics``, as torchvision's ``Weights.meta`` carries the
    published accuracy): ``{"released": key, "released_epoch": N, "published": {metric:
    {"value", "status", "source"}}}`` in percent, from the shipped published numbers.
    """
    model = match_options(options)
    if model is None:
        return None
    pub = load_published()
    rows = pub[(pub["method"] == "FastAP") & (pub["backbone"] == model.backbone)
               & (pub["batch_size"].astype(float) == model.batch_size)
               & (pub["dim"].astype(float) == model.dim) & (pub["dataset"] == model.dataset)]
    return {"released": model.key, "released_epoch": model.epoch,
            "published": {str(r["metric"]): {"value": None if pd.isna(r["value"]) else
                                             float(r["value"]), "status": str(r["status"]),
                                             "source": str(r["source"])}
                          for _, r in rows.iterrows()}}


def load_logs(folders: Sequence[str | os.PathLike[str]]) -> LogRuns:
    """Runs and epochs from ``fastap logs`` output folders or from diary folders.

    A folder that holds neither (no ``epochs.csv`` + ``runs.csv``, no diary) is an error
    naming it, not an empty set of logs.
    """
    runs_frames, epoch_frames, sources = [], [], []
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise InputError(f"{folder}: --logs folder not found")
        if (folder / "epochs.csv").is_file() and (folder / "runs.csv").is_file():
            runs_frames.append(read_csv_file(folder / "runs.csv", "fastap logs runs.csv"))
            epoch_frames.append(check_numeric(
                read_csv_file(folder / "epochs.csv", "fastap logs epochs.csv"),
                folder / "epochs.csv", ["epoch", "train_objective"]))
        else:
            runs, epochs, stats_runs, bad = read_logs([folder])
            if not runs and not stats_runs:
                problems = "".join(f"; {b.error}" for b in bad)
                raise InputError(f"{folder}: no fastap logs output (epochs.csv + runs.csv) and "
                                 f"no readable diary or checkpoint in it{problems}")
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


_present = present


#: Files ``fastap evaluate`` writes beside its results that hold no Recall@K.
_COMPANION_CSV = re.compile(r"^per_query_.*\.csv$|\.verify\.csv$")
EVALUATION_COLUMNS = ["key", "metric", "value", "source", "epoch", "images",
                      "published_images", "synthetic", "evaluated_on", "partial"]


def load_evaluations(folder: str | os.PathLike[str] | None) -> pd.DataFrame:
    """Evaluation results as rows ``key``, ``metric``, ``value`` (percent), ``source`` and
    what each was computed on (:mod:`reproduce.report.provenance`).

    A folder is searched for CSV files (``per_query_*.csv`` and ``*.verify.csv`` companions
    left out). A CSV without the accepted columns, a row whose model is none of the released
    configurations, or a cell that is not a number is an error naming file and line.
    """
    empty = pd.DataFrame(columns=EVALUATION_COLUMNS)
    if folder is None:
        return empty
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: evaluations folder not found")
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.rglob("*.csv") if not _COMPANION_CSV.search(p.name))
    if not files:
        raise InputError(f"{folder}: no evaluation CSV found")
    rows = []
    cards: dict[str, ModelCard | None] = {}
    for path in files:
        frame = read_csv_file(path, "evaluation CSV")
        columns = set(frame.columns)
        if not ({"metric", "value"} <= columns or {"K", "recall"} <= columns):
            raise InputError(f"{path}: not an evaluation CSV: it needs columns metric + value "
                             f"or K + recall, it has {sorted(columns)}")
        for index, row in frame.iterrows():
            parsed = _evaluation_row(row, path, index, cards)
            if parsed is not None:
                rows.append(parsed)
    return pd.DataFrame(rows, columns=empty.columns) if rows else empty


_VID_SUBSET = re.compile(r"(small|medium|large)", re.IGNORECASE)


def model_card(path: str | os.PathLike[str]) -> ModelCard | None:
    """The card of a converted model (``.pt`` or ``.safetensors``), or None.

    Reads only the card (:func:`converters.fastap.model_file.read_card`), not the weights.
    """
    path = Path(path)
    if path.suffix not in (".pt", ".safetensors") or not path.is_file():
        return None
    # imported here: only converted models need torch, which keeps `fastap tables` light
    from converters.fastap.model_file import read_card

    try:
        return read_card(path)
    except (OSError, MatConvNetError) as exc:
        log.warning("%s: cannot read the model card (%s)", path, exc)
        return None


def model_card_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training options in a converted model's card (``ModelCard.opts``), or ``{}``."""
    card = model_card(path)
    return dict(card.opts or {}) if card else {}


def _evaluation_model(row: pd.Series, cards: dict[str, ModelCard | None]
                      ) -> tuple[ReleasedModel | None, str, ModelCard | None]:
    """The released configuration an evaluation row is about, what named it, and the card
    of the converted model the row names (None when it names none)."""
    name = str(row.get("model", "") or "") if _present(row.get("model")) else ""
    if name and name not in cards:
        cards[name] = model_card(name)
    card = cards.get(name)
    dataset = str(row.get("dataset", "") or "")
    arch = row.get("arch", row.get("backbone"))
    batch = row.get("batch_size", row.get("batchSize"))
    if dataset and _present(arch) and _present(batch) and _present(row.get("dim")):
        return (find_model(dataset, str(arch), batch, row.get("dim")),
                f"configuration {dataset} {arch} M={batch} D={row.get('dim')}", card)
    if not name:
        return None, "no model, dataset/arch/batch_size/dim columns", card
    by_key = next((m for m in RELEASED_MODELS if m.key == name), None)
    if by_key is not None:
        return by_key, f"model {name!r}", card
    return match_run(dict(card.opts or {}) if card else {}, name), f"model {name!r}", card


def _evaluation_row(row: pd.Series, path: Path, index: Any, cards: dict[str, ModelCard | None]
                    ) -> dict[str, Any] | None:
    """One evaluation CSV row normalised, or None for a result under another protocol
    ``family`` than the authors' (e.g. ``reid``: not what the paper's tables report).

    Raises ``InputError`` (file and line) for a row that names no released configuration,
    a VehicleID row without its subset, or a value that is not a number.
    """
    if _present(row.get("family")) and str(row["family"]) != "authors":
        return None
    model, named, card = _evaluation_model(row, cards)
    where = f"{path}:{line_of(index)}"
    if model is None:
        raise InputError(f"{where}: {named} is none of the released configurations "
                         f"({', '.join(m.key for m in RELEASED_MODELS)}), and a .pt model "
                         "needs a card whose opts name one")
    if _present(row.get("metric")) and _present(row.get("value")):
        metric, value = str(row["metric"]), number(row["value"], path, index, "value")
        if str(row.get("unit", "") or "") == "fraction":
            value *= 100.0
    elif _present(row.get("K")) and _present(row.get("recall")):
        metric = f"R@{int(number(row['K'], path, index, 'K'))}"
        value = number(row["recall"], path, index, "recall")
        value = value * 100.0 if value <= 1.0 else value
    else:
        raise InputError(f"{where}: no value (metric + value or K + recall are empty)")
    if model.dataset == "vid" and _VID_SUBSET.match(metric) is None:
        where_text = (str(row.get("subset", "") or "") + " "
                      + str(row.get("protocol", "") or ""))
        found = _VID_SUBSET.search(where_text)
        if found is None:
            raise InputError(f"{where}: a VehicleID result needs its subset (small, "
                             "medium, large) in a subset or protocol column")
        metric = f"{found.group(1).lower()} {metric}"
    if metric not in METRICS[model.dataset] + extra_metric_columns(model.dataset):
        log.warning("%s: metric %r is not a column of the %s table (%s): not shown", where,
                    metric, model.dataset, ", ".join(METRICS[model.dataset]))
    basis = evaluated_on(row, path, card, model, metric)
    reasons = basis.reasons(model)
    return {"key": model.key, "metric": metric, "value": value, "source": str(path),
            "epoch": basis.epoch, "images": basis.images,
            "published_images": basis.published_images, "synthetic": basis.synthetic,
            "evaluated_on": basis.describe(model), "partial": bool(reasons)}


def _table_metrics(table: int, evaluations: pd.DataFrame) -> list[str]:
    """The paper's Recall@K columns of a table, then the extra metrics some evaluation of
    one of its configurations has (per VehicleID subset)."""
    dataset = _DATASETS[table]
    keys = {m.key for m in RELEASED_MODELS if m.table == table}
    found = set(evaluations.loc[evaluations["key"].isin(keys), "metric"])
    return METRICS[dataset] + [m for m in extra_metric_columns(dataset) if m in found]


def extra_metric_columns(dataset: str) -> list[str]:
    """The columns the extra metrics (MAP@R, R-precision, NMI) can take in a dataset's table:
    one per VehicleID subset (``small MAP@R``, ...), else one each."""
    prefixes = sorted({m.split(" ")[0] for m in METRICS[dataset] if " " in m},
                      key=[m.split(" ")[0] for m in METRICS[dataset]].index) or [""]
    return [f"{p} {name}".strip() for p in prefixes for name in EXTRA_METRICS]


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
            ev = evaluated.iloc[-1] if not evaluated.empty else None
            ev_value = float(ev["value"]) if ev is not None else None
            # a partial value (another epoch, fewer images, synthetic) is no reproduction of
            # the published number: shown and marked, never differenced against it
            ev_full = ev_value if ev is not None and not bool(ev["partial"]) else None
            lg = log_values.get(metric)
            rows.append({
                "table": table, "dataset": dataset, "method": "FastAP",
                "backbone": model.backbone, "batch_size": model.batch_size, "dim": model.dim,
                "metric": metric, "published": value, "status": status, "source": source,
                "released_epoch": model.epoch, "logs_value": lg,
                "logs_run": log_run if lg is not None else "",
                "logs_epoch": model.epoch if lg is not None else None,
                "evaluated": ev_value,
                "evaluated_source": str(ev["source"]) if ev is not None else "",
                **_evaluated_basis(ev),
                "logs_minus_published": _diff(lg, value),
                "evaluated_minus_published": _diff(ev_full, value),
                "evaluated_minus_logs": _diff(ev_full, lg),
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
    for column in ("batch_size", "dim", "released_epoch", "logs_epoch", "evaluated_epoch",
                   "evaluated_images", "published_images"):
        frame[column] = frame[column].astype("Float64").astype("Int64")  # 256, not 256.0
    frame["evaluated_partial"] = frame["evaluated_partial"].astype("boolean")
    frame["evaluated_synthetic"] = frame["evaluated_synthetic"].astype("boolean")
    return frame


def _evaluated_basis(ev: pd.Series | None) -> dict[str, Any]:
    """The table columns saying what an evaluated value was computed on."""
    if ev is None:
        return {}
    return {"evaluated_epoch": ev["epoch"], "evaluated_images": ev["images"],
            "published_images": ev["published_images"], "evaluated_synthetic": ev["synthetic"],
            "evaluated_partial": bool(ev["partial"]), "evaluated_on": ev["evaluated_on"]}


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
                             if m in by_metric else "missing" for m in metrics]

        body.append([label] + line("published", "published", True))
        if first["method"] == "FastAP":
            epoch = int(first["released_epoch"])
            simulated = group["note"].astype(str).str.contains("SIMULATED").any()
            what = f"logs @ epoch {epoch}" + (" (SIMULATED)" if simulated else "")
            body.append([""] + line(what, "logs_value"))
            partial = _partial(group)
            model_line = line("converted model (PARTIAL)" if partial.any()
                              else "converted model", "evaluated")
            model_line[1:] = [cell + " [partial]" if m in by_metric
                              and bool(partial[by_metric[m].name]) else cell
                              for m, cell in zip(metrics, model_line[1:], strict=True)]
            body.append([""] + model_line)
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


def _partial(frame: pd.DataFrame) -> pd.Series:
    """Per row: an evaluated value that is not the released model on the full test set (a
    table CSV without the ``evaluated_partial`` flag says nothing, so counts as partial)."""
    if "evaluated_partial" not in frame.columns:
        return frame["evaluated"].notna()
    flags = frame["evaluated_partial"].map(
        lambda v: True if pd.isna(v) else str(v).strip().lower() in ("true", "1"))
    return frame["evaluated"].notna() & flags.astype(bool)


partial_rows = _partial


def partial_notes(frame: pd.DataFrame) -> list[str]:
    """``configuration: what it was computed on`` for every partial evaluated value."""
    rows = frame[_partial(frame)]
    notes = []
    for (backbone, batch, dim), group in rows.groupby(["backbone", "batch_size", "dim"],
                                                       sort=False):
        for basis in dict.fromkeys(group["evaluated_on"].astype(str)):
            metrics = ", ".join(group[group["evaluated_on"].astype(str) == basis]["metric"])
            notes.append(f"FastAP {backbone} M={int(batch)} D={int(dim)} ({metrics}): "
                         + basis.removeprefix("PARTIAL: "))
    return notes


def _legend(frame: pd.DataFrame) -> str:
    """What the tags mean; says when log values are simulated and which values are partial."""
    text = ("Status of published values: [sec] secondary source, [conf] conflicting sources, "
            "[recol] recollection (unverified), [missing] no value found. Values in percent; "
            "'missing' means the input was not available, never zero.")
    if (frame["status"] == NOT_REPORTED).any():
        text += ("\nn/r: not reported in the paper (MAP@R, R-precision and NMI are evaluated "
                 "only; the paper reports Recall@K).")
    if frame["note"].astype(str).str.contains("SIMULATED").any():
        text += ("\nLog values marked in the CSV's note column as SIMULATED come from the "
                 "simulated sample diaries, not from the authors' logs.")
    notes = partial_notes(frame)
    if notes:
        text += ("\n[partial] converted-model values NOT from the released checkpoint on the "
                 "full test set (left out of the differences to published and logs):\n"
                 + "\n".join(f"- {note}" for note in notes))
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
        title = table_title(table, frame)
        written[stem] = write_csv(folder / f"{stem}.csv", frame)
        write_text(folder / f"{stem}.md", render_markdown(frame, title))
        write_text(folder / f"{stem}.tex", render_latex(frame, title))
    return written
