"""``fastap plots``: training curves, published vs reproduced Recall@K, the parity summary.

Each figure is written as PNG and PDF (matplotlib, Agg backend) under ``<out>/plots/``:
- ``curves_<run>``: average train objective and Recall@K per epoch of one run, the
  released epoch of its configuration marked; SIMULATED runs say so in the title.
- ``table<N>_<dataset>``: for each FastAP configuration, published / logs / converted-model
  Recall@K side by side (from ``fastap tables`` CSVs); missing values are left out and
  listed in the panel, never drawn as zero.
- ``parity_summary``: max relative error per parity case and quantity, coloured by verdict,
  with the tolerance marked where it is a plain relative one (``rel 1e-12``); entrywise or
  ulp tolerances are not drawn, the verdict says whether they held (from a parity CSV:
  case, quantity, max_abs_err, max_rel_err, tolerance, verdict, note).
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

from logs.tables import is_recall_column, recall_sort_key  # noqa: E402
from reproduce.errors import InputError  # noqa: E402
from reproduce.outputs import atomic_path, command_dir  # noqa: E402
from reproduce.registry import match_run  # noqa: E402
from reproduce.tables import TABLE_FILES, _run_options, load_logs  # noqa: E402

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
    """Max relative error per case/quantity on a log scale, coloured by verdict."""
    needed = {"case", "quantity", "max_rel_err", "verdict"}
    if not needed <= set(parity.columns):
        raise InputError(f"parity CSV lacks columns {sorted(needed - set(parity.columns))}")
    labels = (parity["case"].astype(str) + " : " + parity["quantity"].astype(str)).tolist()
    raw = parity["max_rel_err"].astype(float).to_numpy()
    positive = raw[raw > 0]
    floor = float(positive.min()) / 10.0 if positive.size else 1e-17
    errors = np.where(raw > 0, raw, floor)
    colors = ["tab:green" if v == "pass" else "tab:red" for v in parity["verdict"]]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(labels) + 1.0)))
    y = np.arange(len(labels))
    ax.barh(y, errors, color=colors)
    for yi, value in zip(y, raw, strict=True):
        if value == 0:
            ax.text(floor, yi, " 0 (exact)", va="center", fontsize=7)
    tolerances = [_relative_tolerance(t) for t in parity.get("tolerance", [""] * len(parity))]
    marks = [(yi, t) for yi, t in zip(y, tolerances, strict=True) if t is not None and t > 0]
    if marks:
        ax.scatter([t for _, t in marks], [yi for yi, _ in marks], marker="|", s=120,
                   color="black", label="relative tolerance", zorder=3)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("max relative error (log scale)")
    passed = int((parity["verdict"] == "pass").sum())
    ax.set_title(f"Parity: {passed}/{len(parity)} pass (green pass, red fail)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, stem)


_REL_TOLERANCE = re.compile(
    r"^\s*(?:rel\s*[=:]?\s*(?P<a>[0-9.eE+-]+)|(?P<b>[0-9.eE+-]+)\s*rel)\s*$")


def _relative_tolerance(text: Any) -> float | None:
    """A plain relative tolerance (``rel 1e-12`` or ``1e-12 rel``); None for anything else
    (``identical``, ``abs 2 ulp(4)``, entrywise bounds), which the figure does not mark."""
    match = _REL_TOLERANCE.match(str(text))
    if not match:
        return None
    try:
        return float(match.group("a") or match.group("b"))
    except ValueError:
        return None


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
