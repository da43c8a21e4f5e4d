"""``fastap plots``: the figures exist, are non-empty and valid PNG/PDF."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from logs.simulator import SimSpec, simulate_run
from reproduce.errors import InputError
from reproduce.report.log_tables import logs_command
from reproduce.report.paper_tables import tables_command
from reproduce.report.parity_map import (
    case_families,
    error_over_tolerance,
    parity_cells,
    parity_figure,
)
from reproduce.report.plots import figure_title, plot_parity, plots_command, table_figure


def _valid(path: Path) -> bool:
    head = path.read_bytes()[:8]
    return path.stat().st_size > 1000 and (head.startswith(b"\x89PNG\r\n\x1a\n")
                                           if path.suffix == ".png" else head.startswith(b"%PDF"))


def test_plots_from_logs_tables_and_parity(tmp_path: Path) -> None:
    simulate_run(tmp_path / "diaries", SimSpec(epochs=3, test_interval=3, seed=8))
    logs_command([tmp_path / "diaries"], tmp_path / "out" / "logs")
    tables_command([tmp_path / "out" / "logs"], None, None, tmp_path / "out")
    pd.DataFrame([
        {"case": "tiny_double", "quantity": "h_pos", "max_abs_err": 1e-16, "max_rel_err": 1e-15,
         "tolerance": "1e-12 rel", "verdict": "pass", "note": ""},
        {"case": "tiny_single", "quantity": "dLoss", "max_abs_err": 1e-3, "max_rel_err": 0.0,
         "tolerance": "1e-5 rel", "verdict": "fail", "note": "doctored"},
    ]).to_csv(tmp_path / "parity.csv", index=False)
    result = plots_command([tmp_path / "out" / "logs"], tmp_path / "out" / "tables",
                           tmp_path / "parity.csv", tmp_path / "out")
    files = [p for value in result.values() if not isinstance(value, str) for p in value]
    names = {p.name for p in files}
    assert {"table1_products.png", "table1_products.pdf", "table3_vid.png",
            "parity_summary.png", "parity_summary.pdf"} <= names
    assert any(n.startswith("curves_products-FastAP-512-resnet50") for n in names)
    assert all(_valid(p) for p in files)
    assert not list((tmp_path / "out" / "plots").glob("*.part"))


def test_inputs_not_given_are_skipped(tmp_path: Path) -> None:
    result = plots_command(None, None, None, tmp_path)
    assert all(isinstance(v, str) and v.startswith("skipped") for v in result.values())


@pytest.mark.parametrize(("option", "needle"), [
    ("parity", "missing.csv: parity CSV (run fastap parity) not found"),
    ("tables", "table1_products.csv: fastap tables CSV (run fastap tables) not found"),
    ("logs", "no fastap logs output"),
])
def test_inputs_given_but_missing_are_errors(tmp_path: Path, option: str, needle: str) -> None:
    (tmp_path / "empty").mkdir()
    given = {"parity": tmp_path / "missing.csv", "tables": tmp_path / "empty",
             "logs": [tmp_path / "empty"]}
    with pytest.raises(InputError, match=re.escape(needle)):
        plots_command(**{option: given[option]}, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _table_rows() -> pd.DataFrame:
    """Two FastAP panels: simulated logs in one, a partial model value in the other."""
    base = {"method": "FastAP", "backbone": "ResNet-50", "dim": 512, "status": "secondary",
            "released_epoch": 12, "logs_value": None, "evaluated": None,
            "evaluated_partial": None, "evaluated_on": "", "note": ""}
    rows = [{**base, "batch_size": 256, "metric": m, "published": p, "logs_value": lg,
             "status": st, "note": "SIMULATED log"}
            for m, p, lg, st in (("R@1", 76.4, 73.1, "secondary"),
                                 ("R@1000", 98.2, 97.9, "conflicting"))]
    rows += [{**base, "batch_size": 96, "metric": m, "published": p, "evaluated": 100.0,
              "evaluated_partial": True,
              "evaluated_on": "PARTIAL: epoch 3 checkpoint (released: epoch 28)"}
             for m, p in (("R@1", 75.8), ("R@1000", None))]
    return pd.DataFrame(rows)


def test_table_figure_shares_a_zero_based_axis_and_says_what_is_partial() -> None:
    fig = table_figure(_table_rows(), "Table 1")
    axes = fig.axes
    assert len(axes) == 2 and all(ax.get_ylim() == (0.0, 100.0) for ax in axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("SIMULATED" in t for t in legend) and any("PARTIAL" in t for t in legend)
    assert "model PARTIAL: epoch 3 checkpoint" in axes[1].get_xlabel().replace("\n", " ")
    fig.canvas.draw()
    for ax in axes:  # every status tag lies inside its panel
        box = ax.get_window_extent()
        for text in ax.texts:
            extent = text.get_window_extent()
            assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text.get_text()
    plt.close(fig)


def test_extra_metrics_get_their_own_panels_not_the_recall_axis() -> None:
    rows = _table_rows()
    extra = [{**rows.iloc[0].to_dict(), "metric": m, "published": None, "logs_value": None,
              "status": "not reported", "note": "", "evaluated": v, "evaluated_partial": False,
              "evaluated_on": "released epoch 12, full test set"}
             for m, v in (("MAP@R", 41.5), ("NMI", 88.0))]
    extra[1]["evaluated"] = None  # NMI not evaluated for this configuration
    frame = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)
    fig = table_figure(frame, figure_title(1, frame))
    top, bottom = fig.axes[:2], fig.axes[2:]
    assert len(fig.axes) == 4 and all(ax.get_ylim() == (0.0, 100.0) for ax in fig.axes)
    for ax in top:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["R@1", "R@1000"]
    assert top[0].get_ylabel() == "Recall@K (%)"
    assert "Recall" not in bottom[0].get_ylabel() and "MAP@R, NMI" in bottom[0].get_ylabel()
    assert [t.get_text() for t in bottom[0].get_xticklabels()] == ["MAP@R", "NMI"]
    bars = [p for p in bottom[0].patches if p.get_height() > 0]
    assert [b.get_height() for b in bars] == [41.5]  # the model's value only
    assert "1 missing values not drawn" in bottom[0].get_xlabel()
    assert "not reported in the paper" in bottom[0].get_title()
    assert "not evaluated" in " ".join(t.get_text() for t in bottom[1].texts)
    assert "MAP@R, NMI: converted model only, not in the paper" in \
        fig._suptitle.get_text().replace("\n", " ")
    plt.close(fig)
    assert figure_title(1, rows) == "Table 1: published vs reproduced Recall@K"


def test_parity_cells_are_error_over_tolerance() -> None:
    rows = pd.DataFrame([
        {"case": "a", "quantity": "h", "max_abs_err": 1e-16, "max_rel_err": 5e-13,
         "tolerance": "rel 1e-12", "verdict": "pass"},
        {"case": "a", "quantity": "Z", "max_abs_err": 8.881784197001252e-16, "max_rel_err": 0.0,
         "tolerance": "abs 2 ulp(4)", "verdict": "pass"},
        {"case": "a", "quantity": "dInputs", "max_abs_err": 1e-7, "max_rel_err": 9e-5,
         "tolerance": "rel 4g(D+N) = 1.8e-04, single", "verdict": "pass"},
        {"case": "a", "quantity": "Delta", "max_abs_err": 0.0, "max_rel_err": 0.0,
         "tolerance": "identical", "verdict": "pass"},
        {"case": "a", "quantity": "d_AP_x", "max_abs_err": 1e-3, "max_rel_err": 1e-3,
         "tolerance": "entrywise 2g(N+L+1)|X|M, N=8", "verdict": "fail"},
    ])
    found = [error_over_tolerance(r) for _, r in rows.iterrows()]
    assert found[0] == (pytest.approx(0.5), "rel 1e-12")
    assert found[1] == (pytest.approx(0.5), "2 ulp")  # ulp(4) = 2**-50 in double
    assert found[2][0] == pytest.approx(0.5)
    assert found[3] == (0.0, "identical")
    assert np.isnan(found[4][0]) and found[4][1] == "entrywise"
    fig = parity_figure(rows)
    notes = sorted(t.get_text() for t in fig.axes[0].texts)
    assert notes == ["0\nidentical", "5e-01\n2 ulp", "5e-01\nrel 1e-12", "5e-01\nrel 2e-04",
                     "x\nentrywise"]
    plt.close(fig)


def test_bad_parity_and_table_csvs_are_named(tmp_path: Path) -> None:
    (tmp_path / "parity.csv").write_text(
        "case,quantity,max_abs_err,max_rel_err,tolerance,verdict\na,h,0,abc,rel 1e-12,pass\n")
    with pytest.raises(InputError, match=r"parity.csv:2: column 'max_rel_err': 'abc'"):
        plots_command(parity=tmp_path / "parity.csv", out=tmp_path / "out")
    (tmp_path / "parity.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(InputError, match=r"parity.csv: not a text CSV file"):
        plots_command(parity=tmp_path / "parity.csv", out=tmp_path / "out")
    (tmp_path / "tables").mkdir()
    for name in ("table1_products", "table2_inshop", "table3_vid"):
        (tmp_path / "tables" / f"{name}.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"table1_products.csv: not a fastap tables CSV"):
        plots_command(tables=tmp_path / "tables", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _step_rows() -> pd.DataFrame:
    """A training-step case: per-chunk ders and params, one param failing in batch 2."""
    base = {"case": "s", "max_abs_err": 0.0, "max_rel_err": 0.0, "verdict": "pass",
            "note": "", "family": "training step"}
    der, param = "rel 2e-05 (der, exact)", "rel 2e-06 (param, exact) + entrywise carried bound"
    rows = [{**base, "quantity": q, "tolerance": tol, "error_over_tolerance": r}
            for q, tol, r in (("step1.chunk1.der.conv1_filter", der, 0.1),
                              ("step1.chunk2.der.fc_w", der, 0.4),
                              ("step2.chunk1.der.conv1_filter", der, 0.2),
                              ("step1.chunk1.params.fc_w", param, 0.5),
                              ("step2.chunk1.params.fc_w", param, 3.0),
                              ("step1.chunk1.pool", "rel 2e-06 (activation, exact)", 1.0))]
    rows[4]["verdict"] = "fail"
    return pd.DataFrame(rows)


def test_parity_cells_group_per_chunk_quantities_and_keep_the_worst() -> None:
    cells = parity_cells(_step_rows()).set_index("kind")
    assert list(cells.index) == ["chunk: der.*", "chunk: params.*", "chunk: pool"]
    assert cells.loc["chunk: der.*", ["ratio", "tag", "n", "failed"]].tolist() == \
        [0.4, "rel 2e-05", 3, 0]
    assert cells.loc["chunk: params.*", ["ratio", "tag", "n", "failed"]].tolist() == \
        [3.0, "rel 2e-06+", 2, 1]
    fig = parity_figure(_step_rows())
    ax = fig.axes[0]
    assert ax.get_title(loc="left").startswith("training step")
    assert [t.get_text() for t in ax.get_xticklabels()] == list(cells.index)
    assert sorted(t.get_text() for t in ax.texts) == [
        "1e+00\nrel 2e-06", "4e-01\nrel 2e-05\n×3", "x 3e+00\nrel 2e-06+\n×2, 1 fail"]
    green, red = ax.images
    r, g, b, _ = green.to_rgba(green.get_array())[0, 2]  # ratio exactly 1: passes
    assert g > r and g >= b  # the palest green, never alarming
    assert np.ma.is_masked(green.get_array()[0, 1]) and not np.ma.is_masked(
        red.get_array()[0, 1])
    assert tuple(red.to_rgba(red.get_array())[0, 1][:3]) == pytest.approx(
        matplotlib.colors.to_rgb("tab:red"))
    assert "WORST" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)


def test_families_come_from_the_column_or_the_quantities() -> None:
    rows = pd.DataFrame({"case": ["f", "f", "r", "e", "a", "t", "t2"],
                         "quantity": ["h_pos", "FastAPLoss.dInputs", "recallrate",
                                      "epoch1.batches", "step1.fc_w.value",
                                      "step1.chunk1.pool", "step1.batch_objective"]})
    assert case_families(rows).tolist() == [
        "FastAP layer call", "FastAP layer call", "Recall@K evaluation", "training sampler",
        "training optimizer", "training step", "training step"]
    rows["family"] = ["x", "x", "", "", "", "", "y"]
    assert case_families(rows).tolist()[:3] == ["x", "x", "Recall@K evaluation"]
    assert case_families(rows).tolist()[-1] == "y"


@pytest.fixture(scope="module")
def shipped_parity() -> pd.DataFrame:
    from reproduce import paths
    from reproduce.parity.run import rows_frame, run_parity

    rows, _ = run_parity(list(paths.DEFAULT_FIXTURE_DIRS))
    return rows_frame(rows)


def test_parity_figure_of_every_shipped_family_is_readable(shipped_parity: pd.DataFrame,
                                                           tmp_path: Path) -> None:
    fig = parity_figure(shipped_parity)
    width, height = fig.get_size_inches()
    assert width <= 16.0
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    titles = [ax.get_title(loc="left").split(":")[0] for ax in panels]
    assert titles == ["FastAP loss", "Recall@K", "training sampler", "optimizer",
                      "training step"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    cell_w = panels[0].get_window_extent().width / len(panels[0].get_xticks())
    previous_bottom = canvas.y1
    for ax in panels:
        box = ax.get_window_extent()
        labels = [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title]
        extents = [t.get_window_extent(renderer) for t in labels]
        for text, extent in zip(labels, extents, strict=True):  # nothing clipped
            assert canvas.x0 <= extent.x0 and extent.x1 <= canvas.x1, text.get_text()
            assert canvas.y0 <= extent.y0 and extent.y1 <= canvas.y1, text.get_text()
        top = max(e.y1 for e in extents)
        assert top <= previous_bottom, ax.get_title(loc="left")  # no panel overlaps another
        previous_bottom = min(e.y0 for e in extents)
        for text in ax.texts:  # every note fits its cell
            assert text.get_window_extent(renderer).width < cell_w, text.get_text()
        assert box.width / len(ax.get_xticks()) == pytest.approx(cell_w)
    plt.close(fig)
    written = plot_parity(shipped_parity, tmp_path / "parity_summary")
    assert all(_valid(p) for p in written)
    from PIL import Image

    with Image.open(written[0]) as image:
        assert image.size[0] <= 16 * 120


def test_a_wide_family_is_split_and_an_unknown_one_gets_its_own_panel() -> None:
    rows = pd.DataFrame([{"case": f"c{i % 2}", "quantity": f"q{i}", "max_abs_err": 0.0,
                          "max_rel_err": 0.0, "tolerance": "identical", "verdict": "pass",
                          "error_over_tolerance": 0.0, "family": "FastAP layer call"}
                         for i in range(30)]
                        + [{"case": "z", "quantity": "w", "max_abs_err": 0.0, "max_rel_err": 0.0,
                            "tolerance": "identical", "verdict": "pass",
                            "error_over_tolerance": 0.0, "family": "someone's checker"}])
    fig = parity_figure(rows)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    titles = [ax.get_title(loc="left") for ax in panels]
    assert [len(ax.get_xticks()) for ax in panels] == [15, 15, 1]
    assert titles[0].endswith("[part 1 of 2]") and titles[1].endswith("[part 2 of 2]")
    assert titles[2].startswith("someone's checker")
    plt.close(fig)
