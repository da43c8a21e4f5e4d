"""``fastap plots``: training curves, published vs reproduced Recall@K, the parity summary.

Each figure is written as PNG and PDF (matplotlib, Agg backend) under ``<out>/plots/``:
- ``curves_<run>``: average train objective and Recall@K per epoch of one run, the
  released epoch of its configuration marked; SIMULATED runs say so in the title.
- ``table<N>_<dataset>``: for each FastAP configuration, published / logs / converted-model
  Recall@K side by side (from ``fastap tables`` CSVs) on one 0-100 % axis; missing values
  are left out and counted under the panel, never drawn as zero; SIMULATED logs and
  PARTIAL model values (not the released checkpoint on the full test set) are said in the
  legend, partial bars hatched. Evaluated metrics the paper does not report (MAP@R,
  R-precision, NMI) get a second row of panels with their own axis, model bars only.
- ``parity_summary``: one panel per fixture family, cells coloured by error / tolerance,
  repeated per-step/chunk/parameter quantities grouped into their kind
  (:mod:`reproduce.report.parity_map`).
An input not given means its figures are skipped, and the returned dict says so; an input
given but missing or empty is an ``InputError`` naming it, before anything is written.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from logs.frames import is_recall_column, recall_sort_key  # noqa: E402
from reproduce.errors import InputError  # noqa: E402
from reproduce.outputs import atomic_path, command_dir  # noqa: E402
from reproduce.report.csv_input import check_numeric, read_csv_file  # noqa: E402
from reproduce.report.paper_tables import (  # noqa: E402
    TABLE_FILES,
    _run_options,
    extra_metrics_in,
    is_extra_metric,
    load_logs,
    partial_rows,
)
from reproduce.report.parity_map import (  # noqa: E402
    PARITY_COLUMNS,
    parity_figure,
)
from reproduce.report.released_models import match_run  # noqa: E402

log = logging.getLogger(__name__)


def save_figure(fig: Any, stem: Path, tight: bool = True) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and close the figure.

    ``tight`` crops to the drawn content (one extra layout pass per file); a figure laid
    out in inches with room for its labels passes False.
    """
    written = []
    for suffix in (".png", ".pdf"):
        final = stem.with_suffix(suffix)
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120,
                        bbox_inches="tight" if tight else None)
        written.append(final)
    plt.close(fig)
    return written


def _safe(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:120]


def plot_curves(epochs: pd.DataFrame, run: str, released_epoch: int | None, simulated: bool,
                stem: Path) -> list[Path]:
    """Objective and Recall@K per epoch of one run."""
    frame = epochs[epochs["run"] == run].sort_values("epoch")
    recall_cols = sorted((c for c in frame.columns if is_recall_column(c)
                          and frame[c].notna().any()), key=recall_sort_key)
    fig, (ax_obj, ax_rec) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax_obj.plot(frame["epoch"], frame["train_objective"], "o-", ms=3, color="tab:blue")
    ax_obj.set_xlabel("epoch")
    ax_obj.set_ylabel("average train objective")
    ax_obj.grid(alpha=0.3)
    for column in recall_cols:
        rows = frame[frame[column].notna()]
        ax_rec.plot(rows["epoch"], rows[column] * 100.0, "o-", ms=4, label=column)
    ax_rec.set_xlabel("epoch")
    ax_rec.set_ylabel("Recall@K (%)")
    ax_rec.grid(alpha=0.3)
    if recall_cols:
        ax_rec.legend(fontsize=8, ncol=2)
    else:
        ax_rec.text(0.5, 0.5, "no evaluation in this log", ha="center",
                    transform=ax_rec.transAxes)
    if released_epoch is not None:
        for ax in (ax_obj, ax_rec):
            ax.axvline(released_epoch, color="tab:red", ls="--", lw=1)
        ax_rec.text(released_epoch, ax_rec.get_ylim()[0], f" released epoch {released_epoch}",
                    color="tab:red", fontsize=8, va="bottom")
    title = run + ("\nSIMULATED sample diary (made-up numbers, not the authors' log)"
                   if simulated else "")
    fig.suptitle(title, fontsize=10, color="tab:red" if simulated else "black")
    return save_figure(fig, stem)


TABLE_COLUMNS = {"method", "backbone", "batch_size", "dim", "metric", "published", "status",
                 "logs_value", "evaluated", "note"}
_SERIES = (("published", "published", "tab:gray"), ("logs_value", "logs", "tab:blue"),
           ("evaluated", "converted model", "tab:green"))
_BAR = 0.27
_PARTIAL_COLOUR = "#b7dfb7"


def plot_table(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Draw :func:`table_figure` and write it as ``stem.png`` / ``stem.pdf``."""
    return save_figure(table_figure(frame, title), stem)


def table_figure(frame: pd.DataFrame, title: str) -> Any:
    """Published / logs / converted-model bars per FastAP configuration and metric.

    Every panel shares one y axis from 0 to 100 %; missing values are not drawn and are
    counted under the panel; SIMULATED logs and PARTIAL model values (another epoch, fewer
    images, synthetic) are said in the legend, partial bars hatched and explained per panel.
    Metrics the paper does not report (MAP@R, R-precision, NMI) are never drawn under the
    Recall@K axis: when the table has them they get a second row of panels of their own,
    converted-model bars only, labelled as not in the paper.
    """
    fastap = frame[frame["method"] == "FastAP"]
    extra = fastap["metric"].astype(str).map(is_extra_metric).astype(bool)
    keys = ["backbone", "batch_size", "dim"]
    configs = list(dict.fromkeys(map(tuple, fastap[keys].itertuples(index=False))))
    n_rows = 2 if extra.any() else 1
    fig, axes = plt.subplots(n_rows, len(configs), figsize=(4.2 * len(configs),
                                                            5.0 + 4.0 * (n_rows - 1)),
                             squeeze=False, sharey=True)
    simulated = fastap["note"].astype(str).str.contains("SIMULATED").any()
    any_partial = False
    for column, config in enumerate(configs):
        mine = (fastap[keys].apply(tuple, axis=1) == config).to_numpy()
        panels = [(axes[0][column], fastap[mine & ~extra.to_numpy()], _SERIES)]
        if n_rows == 2:
            panels.append((axes[1][column], fastap[mine & extra.to_numpy()], _SERIES[2:]))
        for ax, group, series in panels:
            any_partial |= _table_panel(ax, group, series, config)
    axes[0][0].set_ylim(0.0, 100.0)
    axes[0][0].set_ylabel("Recall@K (%)")
    if n_rows == 2:
        names = extra_metrics_in(fastap)
        axes[1][0].set_ylabel(f"{', '.join(names)} (%)\nnot in the paper: model only")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color) for _, _, color in _SERIES]
    labels = ["published", "logs (SIMULATED sample diaries)" if simulated else "logs",
              "converted model (released epoch, full test set)"]
    if any_partial and not (fastap["evaluated"].notna() & ~partial_rows(fastap)).any():
        handles, labels = handles[:2], labels[:2]  # no full-test-set value to show
    if any_partial:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=_PARTIAL_COLOUR, hatch="///",
                                     edgecolor="tab:green"))
        labels.append("converted model PARTIAL (not the released model on the full test set)")
    # title, then the legend under it, both from the left and wrapped to the figure width
    width, height = fig.get_size_inches()
    title = textwrap.fill(title, max(40, int(width * 72 / (11 * 0.56))))
    title_h = 0.12 + 0.22 * (title.count("\n") + 1)
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.06 / height, ha="left", va="top")
    ncol = max(1, min(len(handles), int(width // 3.6)))
    legend_h = 0.1 + 0.22 * -(-len(handles) // ncol)
    fig.legend(handles, labels, loc="upper left", fontsize=8, ncol=ncol,
               bbox_to_anchor=(0.005, 1 - title_h / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - (title_h + legend_h - 0.15) / height))
    return fig


def _table_panel(ax: Any, group: pd.DataFrame, series: Sequence[tuple[str, str, str]],
                 config: tuple[Any, ...]) -> bool:
    """One configuration's bars for the metrics of ``group``; True when a bar is partial.

    ``series`` are the (column, label, colour) drawn, side by side around each metric; the
    published and logs series are left out for the metrics the paper does not report.
    """
    backbone, batch, dim = config
    metrics = list(group["metric"])
    x = np.arange(len(metrics))
    missing = 0
    partial = partial_rows(group).to_numpy()
    any_partial = False
    offsets = {column: (i - (len(series) - 1) / 2) * _BAR
               for i, (column, _, _) in enumerate(series)}
    for column, _, color in series:
        values = group[column].to_numpy(dtype=float)
        present = ~np.isnan(values)
        missing += int((~present).sum())
        full = present & ~partial if column == "evaluated" else present
        ax.bar(x[full] + offsets[column], values[full], _BAR, color=color)
        if column == "evaluated" and (present & partial).any():
            any_partial = True
            ax.bar(x[present & partial] + offsets[column], values[present & partial], _BAR,
                   color=_PARTIAL_COLOUR, hatch="///", edgecolor="tab:green")
    if "published" in offsets:
        for xi, (_, row) in zip(x, group.iterrows(), strict=True):
            if row["status"] not in ("secondary", "missing") and not np.isnan(row["published"]):
                # inside the bar, so no tag runs past the axes
                ax.text(xi + offsets["published"], row["published"] - 2.0,
                        str(row["status"])[:5], rotation=90, fontsize=7, ha="center",
                        va="top", color="white")
    ax.set_xticks(x, metrics, rotation=30, fontsize=8)
    ax.set_xlim(-0.6, max(len(metrics), 1) - 0.4)  # every group of bars inside, same margins
    what = "" if "published" in offsets else ": not reported in the paper"
    ax.set_title(f"{backbone} M={int(batch)} D={int(dim)}{what}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    notes = []
    if missing:
        notes.append(f"{missing} missing values not drawn")
    if partial.any():
        basis = "; ".join(dict.fromkeys(group.loc[partial, "evaluated_on"].astype(str))) \
            if "evaluated_on" in group.columns else "PARTIAL: basis not recorded"
        notes.append("model " + basis)
    drawn = [c for c, _, _ in series]
    if not np.isfinite(group[drawn].to_numpy(dtype=float)).any():
        message = ("no value available\n(published, logs and model missing)"
                   if "published" in offsets else "not evaluated for this configuration")
        ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", fontsize=8,
                color="tab:red")
    if partial.any():
        ax.text(0.02, 0.98, "model: PARTIAL", transform=ax.transAxes, fontsize=8,
                color="tab:red", va="top", zorder=5,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "tab:red"})
    if notes:
        ax.set_xlabel(textwrap.fill(" | ".join(notes), 52), fontsize=7, color="tab:red")
    return any_partial


def figure_title(table: int, frame: pd.DataFrame) -> str:
    """The suptitle of a table figure; names the evaluated-only metrics when drawn."""
    extra = extra_metrics_in(frame[frame["method"] == "FastAP"])
    title = f"Table {table}: published vs reproduced Recall@K"
    if extra:
        title += f" (top); {', '.join(extra)}: converted model only, not in the paper (bottom)"
    return title


def plot_parity(parity: pd.DataFrame, stem: Path) -> list[Path]:
    """Draw :func:`~reproduce.report.parity_map.parity_figure`; write ``stem.png`` / ``.pdf``."""
    return save_figure(parity_figure(parity), stem, tight=False)  # laid out in inches


def plots_command(logs: Sequence[str | os.PathLike[str]] | None = None,
                  tables: str | os.PathLike[str] | None = None,
                  parity: str | os.PathLike[str] | None = None,
                  out: str | os.PathLike[str] | None = "out",
                  arguments: dict[str, Any] | None = None) -> dict[str, list[Path] | str]:
    """Write every figure its inputs allow under ``<out>/plots/``; say which were skipped.

    An input not given is skipped (and said so); an input given but missing or empty (a
    parity CSV that does not exist, a tables folder without the table CSVs, logs with no
    run) is an ``InputError`` naming it, raised before anything is written.
    """
    log_runs = load_logs(logs) if logs else None
    table_frames: dict[str, tuple[int, pd.DataFrame]] = {}
    if tables:
        for table, stem in TABLE_FILES.items():
            path = Path(tables) / f"{stem}.csv"
            frame = read_csv_file(path, "fastap tables CSV (run fastap tables)")
            missing = TABLE_COLUMNS - set(frame.columns)
            if missing:
                raise InputError(f"{path}: not a fastap tables CSV: columns {sorted(missing)} "
                                 "missing")
            table_frames[stem] = (table, check_numeric(frame, path, (
                "batch_size", "dim", "published", "logs_value", "evaluated")))
    parity_frame = None
    if parity:
        parity_frame = read_csv_file(parity, "parity CSV (run fastap parity)")
        missing = PARITY_COLUMNS - set(parity_frame.columns)
        if missing:
            raise InputError(f"{parity}: not a parity CSV: columns {sorted(missing)} missing")
        check_numeric(parity_frame, parity, ("max_abs_err", "max_rel_err",
                                             "error_over_tolerance"))
    folder = command_dir(out, "plots", arguments or {
        "logs": [str(p) for p in logs or []], "tables": str(tables or ""),
        "parity": str(parity or ""), "out": str(out)})
    result: dict[str, list[Path] | str] = {}
    if log_runs is not None:
        for _, row in log_runs.runs.iterrows():
            name = str(row["run"])
            if not (log_runs.epochs["run"] == name).any():
                result[f"curves {name}"] = "skipped: no epoch in this run's log"
                continue
            model = match_run(_run_options(row), name)
            result[f"curves {name}"] = plot_curves(
                log_runs.epochs, name, model.epoch if model else None,
                bool(row.get("simulated")), folder / f"curves_{_safe(name)}")
    else:
        result["curves"] = "skipped: no --logs given"
    if tables:
        for stem, (table, frame) in table_frames.items():
            result[stem] = plot_table(frame, figure_title(table, frame), folder / stem)
    else:
        result["tables"] = "skipped: no --tables given"
    if parity_frame is not None:
        result["parity_summary"] = plot_parity(parity_frame, folder / "parity_summary")
    else:
        result["parity_summary"] = "skipped: no --parity given"
    return result
