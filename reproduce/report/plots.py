"""``fastap plots``: training curves, published vs reproduced Recall@K, the parity summary.

Each figure is written as PNG and PDF (matplotlib, Agg backend) under ``<out>/plots/``:
- ``curves_<run>``: average train objective and Recall@K per epoch of one run, the
  released epoch of its configuration marked; SIMULATED runs say so in the title.
- ``table<N>_<dataset>``: for each FastAP configuration, published / logs / converted-model
  Recall@K side by side (from ``fastap tables`` CSVs); missing values are left out and
  listed in the panel, never drawn as zero.
- ``parity_summary``: a case x quantity map of the max relative error, failing comparisons
  marked (from a parity CSV: case, quantity, max_abs_err, max_rel_err, tolerance, verdict,
  note); each comparison's own tolerance and verdict are in the CSV.
An input not given means its figures are skipped, and the returned dict says so.
"""

from __future__ import annotations

import logging
import os
import re
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
from reproduce.report.paper_tables import TABLE_FILES, _run_options, load_logs  # noqa: E402
from reproduce.report.released_models import match_run  # noqa: E402

log = logging.getLogger(__name__)


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and close the figure."""
    written = []
    for suffix in (".png", ".pdf"):
        final = stem.with_suffix(suffix)
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120, bbox_inches="tight")
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


def plot_table(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Published / logs / converted-model bars per FastAP configuration and metric."""
    fastap = frame[frame["method"] == "FastAP"]
    groups = list(fastap.groupby(["backbone", "batch_size", "dim"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.2), squeeze=False)
    series = [("published", "published", "tab:gray"), ("logs_value", "logs", "tab:blue"),
              ("evaluated", "converted model", "tab:green")]
    for ax, ((backbone, batch, dim), group) in zip(axes[0], groups, strict=True):
        metrics = list(group["metric"])
        x = np.arange(len(metrics))
        missing = []
        for i, (column, label, color) in enumerate(series):
            values = group[column].to_numpy(dtype=float)
            present = ~np.isnan(values)
            ax.bar(x[present] + (i - 1) * 0.27, values[present], 0.27, label=label, color=color)
            missing += [f"{label}: {m}" for m, p in zip(metrics, present, strict=True) if not p]
        for xi, (_, row) in zip(x, group.iterrows(), strict=True):
            if row["status"] not in ("secondary", "missing") and not np.isnan(row["published"]):
                ax.text(xi - 0.27, row["published"], row["status"][:5], rotation=90,
                        fontsize=7, ha="center", va="bottom")
        ax.set_xticks(x, metrics, rotation=30, fontsize=8)
        ax.set_title(f"{backbone} M={int(batch)} D={int(dim)}", fontsize=9)
        ax.set_ylabel("Recall@K (%)")
        values = group[["published", "logs_value", "evaluated"]].to_numpy(dtype=float)
        low = np.nanmin(values) if np.isfinite(values).any() else 0.0
        ax.set_ylim(max(0.0, low - 10.0), 102.0)  # room for the status labels above 100
        ax.grid(axis="y", alpha=0.3)
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "no value available\n(published, logs and model missing)",
                    transform=ax.transAxes, ha="center", fontsize=8, color="tab:red")
        elif missing:
            ax.set_xlabel(f"{len(missing)} missing values not drawn", fontsize=7,
                          color="tab:red")
        if group["note"].astype(str).str.contains("SIMULATED").any():
            ax.text(0.02, 0.95, "logs: SIMULATED", transform=ax.transAxes, fontsize=8,
                    color="tab:red", va="top")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color) for _, _, color in series]
    fig.legend(handles, [label for _, label, _ in series], loc="upper right", fontsize=8,
               ncol=3)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, stem)


def plot_parity(parity: pd.DataFrame, stem: Path) -> list[Path]:
    """A case x quantity map of the max relative error (log colour scale); failing cells are
    marked with a red cross, exact agreement with 0, quantities a case lacks stay blank."""
    needed = {"case", "quantity", "max_rel_err", "verdict"}
    if not needed <= set(parity.columns):
        raise InputError(f"parity CSV lacks columns {sorted(needed - set(parity.columns))}")
    cases = list(dict.fromkeys(parity["case"].astype(str)))
    quantities = list(dict.fromkeys(parity["quantity"].astype(str)))
    grid = np.full((len(cases), len(quantities)), np.nan)
    failed = np.zeros(grid.shape, dtype=bool)
    for _, row in parity.iterrows():
        i, j = cases.index(str(row["case"])), quantities.index(str(row["quantity"]))
        grid[i, j] = float(row["max_rel_err"])
        failed[i, j] = str(row["verdict"]) != "pass"
    positive = grid[np.isfinite(grid) & (grid > 0)]
    low = float(positive.min()) if positive.size else 1e-17
    logged = np.log10(np.where(np.isfinite(grid) & (grid > 0), grid, low))
    logged[np.isnan(grid)] = np.nan
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * len(quantities) + 3.0),
                                    max(3.0, 0.32 * len(cases) + 2.0)))
    image = ax.imshow(np.ma.masked_invalid(logged), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="log10 max relative error")
    for i, j in zip(*np.nonzero(np.isfinite(grid)), strict=True):
        if failed[i, j]:
            ax.text(j, i, "x", ha="center", va="center", color="red", fontsize=11,
                    fontweight="bold")
        elif grid[i, j] == 0:
            ax.text(j, i, "0", ha="center", va="center", color="white", fontsize=7)
    ax.set_xticks(range(len(quantities)), quantities, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(cases)), cases, fontsize=7)
    passed = int((parity["verdict"] == "pass").sum())
    ax.set_title(f"Parity with the saved MATLAB values: {passed}/{len(parity)} comparisons "
                 "pass (x = fail, 0 = identical, blank = not saved)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem)


def plots_command(logs: Sequence[str | os.PathLike[str]] | None = None,
                  tables: str | os.PathLike[str] | None = None,
                  parity: str | os.PathLike[str] | None = None,
                  out: str | os.PathLike[str] | None = "out",
                  arguments: dict[str, Any] | None = None) -> dict[str, list[Path] | str]:
    """Write every figure its inputs allow under ``<out>/plots/``; say which were skipped."""
    folder = command_dir(out, "plots", arguments or {
        "logs": [str(p) for p in logs or []], "tables": str(tables or ""),
        "parity": str(parity or ""), "out": str(out)})
    result: dict[str, list[Path] | str] = {}
    if logs:
        log_runs = load_logs(logs)
        for _, row in log_runs.runs.iterrows():
            name = str(row["run"])
            model = match_run(_run_options(row), name)
            result[f"curves {name}"] = plot_curves(
                log_runs.epochs, name, model.epoch if model else None,
                bool(row.get("simulated")), folder / f"curves_{_safe(name)}")
    else:
        result["curves"] = "skipped: no --logs given"
    if tables:
        for table, stem in TABLE_FILES.items():
            path = Path(tables) / f"{stem}.csv"
            if not path.is_file():
                result[stem] = f"skipped: {path} not found"
                continue
            frame = pd.read_csv(path)
            result[stem] = plot_table(frame, f"Table {table}: published vs reproduced "
                                             "Recall@K", folder / stem)
    else:
        result["tables"] = "skipped: no --tables given"
    if parity:
        path = Path(parity)
        if path.is_file():
            result["parity_summary"] = plot_parity(pd.read_csv(path), folder / "parity_summary")
        else:
            result["parity_summary"] = f"skipped: {path} not found (run fastap parity)"
    else:
        result["parity_summary"] = "skipped: no --parity given"
    return result
