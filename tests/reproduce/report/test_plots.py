"""``fastap plots``: the figures exist, are non-empty and valid PNG/PDF."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from logs.simulator import SimSpec, simulate_run
from reproduce.report.log_tables import logs_command
from reproduce.report.paper_tables import tables_command
from reproduce.report.plots import plots_command


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


def test_missing_inputs_are_skipped(tmp_path: Path) -> None:
    result = plots_command(None, None, None, tmp_path)
    assert all(isinstance(v, str) and v.startswith("skipped") for v in result.values())
    result = plots_command(None, tmp_path / "no-tables", tmp_path / "no-parity.csv", tmp_path)
    assert result["parity_summary"].startswith("skipped") and "no-parity.csv" in \
        result["parity_summary"]
    assert result["table1_products"].startswith("skipped")
