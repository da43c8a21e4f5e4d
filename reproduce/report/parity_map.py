"""The ``parity_summary`` figure: one panel per fixture family, cells coloured by error / tolerance.

Input is a parity CSV (``fastap parity``: case, quantity, max_abs_err, max_rel_err,
tolerance, verdict, note, error_over_tolerance, family). Each panel is one fixture family
(FastAP layer call, Recall@K evaluation, training sampler, optimizer, training step), its
rows the family's cases, its columns the compared quantities. Quantities repeated per
step, chunk, epoch or parameter (``step2.chunk3.der.conv1_filter``) are grouped into their
kind (``chunk: der.*``, :data:`KINDS`): the cell shows the group's worst ratio, the
tolerance of that worst member and how many comparisons it holds. Passing cells run from
dark green (far below the tolerance, or identical) to pale green (at it); only failures
are red. A CSV without the ``family`` column gets each case's family from its quantities
(:data:`FAMILY_SIGNS`); one without ``error_over_tolerance`` has the ratio read from the
tolerance text where that is one number (:func:`error_over_tolerance`).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reproduce.errors import InputError  # noqa: E402

PARITY_COLUMNS = {"case", "quantity", "max_abs_err", "max_rel_err", "tolerance", "verdict"}

#: panel order and title per family (``reproduce.parity.run.FAMILIES`` names)
PANELS: dict[str, str] = {
    "FastAP layer call": "FastAP loss: FastAP.m stage by stage, then FastAPLoss from X alone",
    "Recall@K evaluation": "Recall@K: evaluate_recall",
    "training sampler": "training sampler: train_hard / train_hard_vid batches",
    "training optimizer": "optimizer: accumulateGradients with solver.adam",
    "training step": "training step: train_hard's per-batch block (end to end, 2 batches)",
}

#: (family, pattern one of a case's quantities matches), tried in order: the family of a
#: case in a CSV that has no ``family`` column
FAMILY_SIGNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern)) for family, pattern in (
        ("Recall@K evaluation", r"^recallrate$|^printed$"),
        ("training sampler", r"^meta_ids$|^epoch\d+\."),
        ("training step", r"^step\d+\.(batch_objective|chunk\d+\.)"),
        ("training optimizer", r"^step\d+\.[^.]+\.(value|state)$"),
        ("FastAP layer call", r""),
    ))

#: (pattern, kind label): a quantity repeated per step, chunk, epoch or parameter goes into
#: its kind's column; the first pattern that matches decides; others keep their own name
KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), label) for pattern, label in (
        (r"^step\d+\.stage\d+\.chunk\d+\.(?P<k>[^.]+)$", "stage 1: {k}"),
        (r"^step\d+\.chunk\d+\.(?P<k>der|params)\.[^.]+$", "chunk: {k}.*"),
        (r"^step\d+\.chunk\d+\.(?P<k>[^.]+)$", "chunk: {k}"),
        (r"^step\d+\.adam\.[^.]+\.(?P<k>[^.]+)$", "adam.*.{k}"),
        (r"^step\d+\.params\.[^.]+$", "params.*"),
        (r"^step\d+\.(?P<k>[^.]+)$", "{k}"),
        (r"^step\d+\.[^.]+\.(?P<k>[^.]+)$", "*.{k}"),
        (r"^epoch\d+\.(?P<k>[^.]+)$", "epoch: {k}"),
    ))

LOW = -8.0
"""log10(error / tolerance) drawn as darkest green ("far below the tolerance")."""
MAX_COLUMNS = 24
"""A panel with more kinds is split over several rows of panels (width stays bounded)."""
_CELL_W, _CELL_H = 0.5, 0.34  # inches
_TITLE_H, _TICKS_H = 0.4, 0.85  # inches above / below each panel
_RIGHT = 1.25  # inches for the colour bar and its labels
_FONT = 5.5


def quantity_kind(quantity: str) -> str:
    """The column a quantity is drawn in: its kind (:data:`KINDS`) or its own name."""
    for pattern, label in KINDS:
        match = pattern.match(quantity)
        if match:
            return label.format(**match.groupdict())
    return quantity


def case_families(parity: pd.DataFrame) -> pd.Series:
    """Per row, its fixture family: the ``family`` column, else from its case's quantities."""
    given = parity["family"].astype("string") if "family" in parity.columns else None
    guessed: dict[str, str] = {}
    for case, quantities in parity.groupby(parity["case"].astype(str), sort=False)["quantity"]:
        names = [str(q) for q in quantities]
        guessed[case] = next(family for family, sign in FAMILY_SIGNS
                             if any(sign.search(q) for q in names))
    inferred = parity["case"].astype(str).map(guessed)
    if given is None:
        return inferred
    return given.where(given.notna() & (given != ""), inferred).astype(str)


_NUMBER = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"
_REL = re.compile(rf"^rel (?:[^=,]*= )?(?P<tol>{_NUMBER})")
_ABS = re.compile(rf"^abs (?P<tol>{_NUMBER})(?!\s*ulp)")
_ULP = re.compile(rf"^abs (?P<n>{_NUMBER}) ulp\((?P<at>{_NUMBER})\)")
_TWO_U = re.compile(r"^(?P<n>\d+)u of max\|x\|, (?P<cls>\w+)")
_CARRIED = "carried bound"


def error_over_tolerance(row: pd.Series) -> tuple[float, str]:
    """A comparison's error as a fraction of its tolerance, and a short tolerance tag.

    Uses the CSV's ``error_over_tolerance`` column when it has a number; else reads the
    ``tolerance`` text: ``identical`` (0), ``rel T`` / ``rel ... = T`` (relative), ``abs T``,
    ``abs N ulp(x)``. Entrywise bounds (``entrywise ...``, ``... + entrywise carried
    bound``) have no single number: NaN, and the verdict alone says whether every entry is
    within its bound.
    """
    text = str(row.get("tolerance", "") or "").strip()
    given = row.get("error_over_tolerance")
    if given is not None and not pd.isna(given):
        return float(given), tolerance_tag(text)
    if text == "identical":
        return (0.0 if float(row["max_abs_err"]) == 0 else float("inf")), "identical"
    if "entrywise" in text:
        return float("nan"), tolerance_tag(text)
    for pattern, error in ((_REL, "max_rel_err"), (_ABS, "max_abs_err")):
        match = pattern.match(text)
        if match:
            tol = float(match.group("tol"))
            return _ratio(float(row[error]), tol), tolerance_tag(text)
    match = _ULP.match(text)
    if match:
        tol = float(match.group("n")) * float(np.spacing(float(match.group("at"))))
        return _ratio(float(row["max_abs_err"]), tol), tolerance_tag(text)
    return float("nan"), tolerance_tag(text)


def _ratio(error: float, tolerance: float) -> float:
    """error / tolerance (0 / 0 = 0)."""
    if error == 0:
        return 0.0
    return error / tolerance if tolerance > 0 else float("inf")


#: fixed tolerance texts and their tags
_FIXED_TAGS = {"identical": "identical", "empty (the number 0)": "empty", "all used": "all used",
               "loss exactly 0": "exactly 0"}


def tolerance_tag(text: str) -> str:
    """A few characters naming a tolerance (``rel 1e-12``, ``rel 2e-06+``, ``2 ulp``,
    ``2u single``, ``entrywise``); ``+`` marks an entrywise bound carried on top."""
    text = text.strip()
    if text in _FIXED_TAGS:
        return _FIXED_TAGS[text]
    if text.startswith("entrywise"):
        return "entrywise"
    match = _REL.match(text)
    if match:
        return f"rel {float(match.group('tol')):.0e}" + ("+" if _CARRIED in text else "")
    match = _ULP.match(text)
    if match:
        return f"{match.group('n')} ulp"
    match = _TWO_U.match(text)
    if match:
        return f"{match.group('n')}u {match.group('cls')}"
    return text[:10]


def parity_cells(parity: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, case, kind): worst ratio, its tag, counts, pass/fail.

    Columns: ``family``, ``case``, ``kind``, ``ratio`` (the worst of the group: among the
    failing members when any fails; NaN when no member has a number), ``tag`` (that
    member's tolerance), ``n``, ``failed`` (how many members fail).
    """
    missing = PARITY_COLUMNS - set(parity.columns)
    if missing:
        raise InputError(f"parity CSV lacks columns {sorted(missing)}")
    given = (pd.to_numeric(parity["error_over_tolerance"], errors="coerce")
             if "error_over_tolerance" in parity.columns
             else pd.Series(np.nan, index=parity.index))
    texts = parity["tolerance"].fillna("").astype(str).str.strip()
    tags = {text: tolerance_tag(text) for text in texts.unique()}
    ratio = given.to_numpy(dtype=float, copy=True)
    for i in np.flatnonzero(np.isnan(ratio)):  # no recorded ratio: read the tolerance text
        ratio[i] = error_over_tolerance(parity.iloc[i])[0]
    kinds = {q: quantity_kind(q) for q in parity["quantity"].astype(str).unique()}
    rows = pd.DataFrame({
        "family": case_families(parity).to_numpy(),
        "case": parity["case"].astype(str).to_numpy(),
        "kind": parity["quantity"].astype(str).map(kinds).to_numpy(),
        "ratio": ratio, "tag": texts.map(tags).to_numpy(),
        "failed": (parity["verdict"].astype(str) != "pass").to_numpy()})
    rows["order"] = np.arange(len(rows))
    keys = ["family", "case", "kind"]
    groups = rows.groupby(keys, sort=False)
    counts = groups.agg(n=("order", "size"), failed=("failed", "sum"))
    # the member a cell reports: the failing one with the largest ratio if any fails, else
    # the largest ratio (members without a number count least)
    worst = rows.sort_values(["failed", "ratio"], na_position="first", kind="stable") \
        .groupby(keys, sort=False).tail(1)
    cells = worst.set_index(keys)[["ratio", "tag"]].join(counts).reset_index()
    first = groups["order"].min().rename("first")
    return cells.join(first, on=keys).sort_values("first").drop(columns="first").reset_index(
        drop=True)


def _cell_text(ratio: float, tag: str, n: int, failed: int) -> str:
    """``ratio / tag / xn`` of one cell (``x`` first for a failure)."""
    if np.isnan(ratio):
        shown = "x" if failed else "ok"
    else:
        shown = "0" if ratio == 0 else f"{ratio:.0e}"
        if failed:
            shown = "x " + shown
    lines = [shown, tag]
    if n > 1:
        lines.append(f"×{n}" + (f", {failed} fail" if failed else ""))
    return "\n".join(lines)


def _level(ratio: float, failed: bool) -> float:
    """The colour value: log10 ratio in [LOW, 0] for passing cells, 1 for failures."""
    if failed:
        return 1.0
    if np.isnan(ratio):
        return LOW / 2
    return float(np.clip(np.log10(ratio), LOW, 0.0)) if ratio > 0 else LOW


def _panels(cells: pd.DataFrame) -> list[tuple[str, list[str], list[str]]]:
    """(title, cases, kinds) per panel, families in :data:`PANELS` order, wide ones split."""
    families = [f for f in PANELS if f in set(cells["family"])]
    families += [f for f in dict.fromkeys(cells["family"]) if f not in PANELS]
    panels = []
    for family in families:
        part = cells[cells["family"] == family]
        cases = list(dict.fromkeys(part["case"]))
        # columns in the order of the case that has the most of them (a staged training
        # step has every kind, in the order the run reaches them), then any others
        per_case = part.groupby("case", sort=False)["kind"].agg(list)
        fullest = max(per_case, key=len)
        kinds = list(dict.fromkeys([*fullest, *part["kind"]]))
        pieces = int(np.ceil(len(kinds) / MAX_COLUMNS))
        size = int(np.ceil(len(kinds) / pieces))
        grouped = int((part["n"] > 1).any())
        n_rows = int(part["n"].sum())
        for p in range(pieces):
            title = PANELS.get(family, family)
            title += (f"  ({len(cases)} cases, {n_rows} comparisons"
                      + (f" in {len(kinds)} kinds" if grouped else "") + ")")
            if pieces > 1:
                title += f"  [part {p + 1} of {pieces}]"
            panels.append((title, cases, kinds[p * size:(p + 1) * size]))
    return panels


def parity_figure(parity: pd.DataFrame) -> Any:
    """The parity map: one panel per family, one cell per case and quantity kind.

    Passing cells run from dark green (error far below the tolerance, or none) to pale
    green (at it); failing cells are red with an x. Each cell notes its worst ratio, the
    tolerance of that comparison and, for a group, how many comparisons it holds; a cell
    whose tolerance is an entrywise bound with no ratio recorded shows its verdict only.
    Quantities a case lacks stay blank.
    """
    cells = parity_cells(parity)
    panels = _panels(cells)
    by_key = {(f, c, k): row for f, c, k, row in zip(cells["family"], cells["case"],
                                                      cells["kind"], cells.itertuples(),
                                                      strict=True)}
    family_of = dict(zip(cells["case"], cells["family"], strict=False))
    label_w = max(len(c) for _, cases, _ in panels for c in cases) * 7 * 0.66 / 72 + 0.3
    widest = max(len(kinds) for _, _, kinds in panels)
    width = label_w + widest * _CELL_W + _RIGHT
    head = 1.05
    heights = [_TITLE_H + len(cases) * _CELL_H + _TICKS_H for _, cases, _ in panels]
    height = head + sum(heights)
    fig = plt.figure(figsize=(width, height))
    greens = plt.get_cmap("Greens_r")
    red = matplotlib.colors.ListedColormap(["tab:red"])
    top = height - head
    image = None
    for (title, cases, kinds), panel_h in zip(panels, heights, strict=True):
        grid_h = len(cases) * _CELL_H
        ax = fig.add_axes((label_w / width, (top - _TITLE_H - grid_h) / height,
                           len(kinds) * _CELL_W / width, grid_h / height))
        level = np.full((len(cases), len(kinds)), np.nan)
        failed = np.zeros(level.shape, dtype=bool)
        for i, case in enumerate(cases):
            for j, kind in enumerate(kinds):
                cell = by_key.get((family_of[case], case, kind))
                if cell is None:
                    continue
                level[i, j] = _level(cell.ratio, bool(cell.failed))
                failed[i, j] = bool(cell.failed)
                dark = not cell.failed and level[i, j] < LOW / 2
                ax.text(j, i, _cell_text(cell.ratio, cell.tag, int(cell.n), int(cell.failed)),
                        ha="center", va="center", fontsize=_FONT, linespacing=1.05,
                        color="white" if dark or cell.failed else "black",
                        fontweight="bold" if cell.failed else "normal")
        image = ax.imshow(np.ma.masked_where(np.isnan(level) | failed, level), cmap=greens,
                          vmin=LOW, vmax=0.0, aspect="auto", interpolation="nearest")
        if failed.any():
            ax.imshow(np.ma.masked_where(~failed, np.ones(level.shape)), cmap=red,
                      aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(kinds)), kinds, rotation=40, ha="right",
                      rotation_mode="anchor", fontsize=6.5)
        ax.set_yticks(range(len(cases)), cases, fontsize=7)
        ax.hlines(np.arange(1, len(cases)) - 0.5, -0.5, len(kinds) - 0.5, color="white",
                  linewidth=0.6)
        ax.vlines(np.arange(1, len(kinds)) - 0.5, -0.5, len(cases) - 0.5, color="white",
                  linewidth=0.6)
        ax.set_title(title, fontsize=8, loc="left")
        top -= panel_h
    bar_ax = fig.add_axes(((width - _RIGHT + 0.3) / width, _TICKS_H / height, 0.14 / width,
                           (height - head - _TITLE_H - _TICKS_H) / height))
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label("log10(error / tolerance) of passing comparisons\n(0: at the tolerance; "
                  f"{LOW:g}: far below it, or identical)", fontsize=7)
    bar.ax.tick_params(labelsize=6.5)
    passed = int((parity["verdict"].astype(str) == "pass").sum())
    n_fail = len(parity) - passed
    n_cases = parity["case"].nunique()
    verdict = (f"{n_fail} FAIL" if n_fail else "all pass")
    lines = [f"Parity with the saved MATLAB values: {passed}/{len(parity)} comparisons pass "
             f"over {n_cases} cases ({verdict})."]
    explain = ("Each cell: error / tolerance (colour and first line; 0 = identical, ok = "
               "within an entrywise bound), the tolerance (second line; '+' = plus an "
               "entrywise bound carried from earlier steps), and xn when the cell groups n "
               "comparisons. Red x = fail; blank = not saved. Columns named 'chunk:', "
               "'stage 1:', 'epoch:', '*.' or '.*' group a quantity over steps, chunks, "
               "epochs or parameters and show the WORST ratio of the group.")
    wrap = max(60, int((width - 0.6) * 72 / (7.5 * 0.5)))
    fig.text(0.2 / width, 1 - 0.15 / height, lines[0], fontsize=10, va="top",
             color="tab:red" if n_fail else "black", fontweight="bold" if n_fail else "normal")
    fig.text(0.2 / width, 1 - 0.45 / height, textwrap.fill(explain, wrap), fontsize=7.5,
             va="top")
    return fig
