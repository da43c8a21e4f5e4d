"""``fastap parity`` and the checks behind it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

import reproduce.cli.main as cli
from reproduce import paths
from reproduce.errors import InputError
from reproduce.parity.fastap import check_fastap_fixture
from reproduce.parity.run import check_fixture, run_parity

FIXTURES = paths.FIXTURES
FASTAP = FIXTURES / "fastap_matlab"
CASES = sorted(FASTAP.glob("*.mat"))
NOT_COMPARED = {"X", "Y", "nbins", "case_name", "description", "precision"}


@pytest.fixture(scope="module")
def fastap_rows() -> dict[str, list]:
    return {path.stem: check_fastap_fixture(path) for path in CASES}


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The real ``fastap`` entry point with only this subcommand registered."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("parity",))
    return cli.main(argv)


def test_every_shipped_case_passes_and_every_saved_field_is_compared(fastap_rows: dict) -> None:
    for path in CASES:
        rows = fastap_rows[path.stem]
        failed = [(r.quantity, r.max_abs_err, r.note) for r in rows if not r.passed]
        assert not failed, f"{path.stem}: {failed}"
        saved = {k for k in scipy.io.loadmat(path) if not k.startswith("__")} - NOT_COMPARED
        assert saved <= {r.quantity for r in rows}
        assert all(0.0 <= r.error_over_tolerance <= 1.0 for r in rows), path.stem
        assert {"FastAPLoss.average", "FastAPLoss.dInputs"} <= {r.quantity for r in rows}


def test_double_cases_are_tight(fastap_rows: dict) -> None:
    for path in CASES:
        if "double" not in path.stem:
            continue
        by_name = {r.quantity: r for r in fastap_rows[path.stem]}
        for name in ("h_pos", "FastAP_query", "d_AP_h_pos", "d_AP_h_neg", "d_AP_x",
                     "FastAPLoss.average", "FastAPLoss.dInputs"):
            assert by_name[name].max_rel_err <= 1e-13, (path.stem, name)


def test_near_edge_pairs_are_reported_not_dropped(fastap_rows: dict) -> None:
    rows = {r.quantity: r for r in fastap_rows["edge_duplicates_antipodes"]}
    note = rows["FastAPLoss.dInputs"].note
    assert "bin edge" in note and "pair(s)" in note


def _doctored(tmp_path: Path, case: str, field: str, factor: float) -> Path:
    mat = scipy.io.loadmat(FASTAP / f"{case}.mat")
    value = np.array(mat[field])
    value.flat[np.argmax(np.abs(value))] *= factor
    mat[field] = value
    folder = tmp_path / "doctored"
    folder.mkdir(exist_ok=True)
    out = folder / f"{case}.mat"
    scipy.io.savemat(out, {k: v for k, v in mat.items() if not k.startswith("__")})
    return out


@pytest.mark.parametrize(("case", "field", "factor"), [
    ("tiny_double", "h_pos", 1 + 1e-9),
    ("tiny_double", "d_AP_x", 1 + 1e-10),
    ("tiny_single", "dInputs", 1 + 1e-4),
    ("tiny_single", "average", 1 + 1e-6),
])
def test_a_doctored_fixture_fails(tmp_path: Path, case: str, field: str, factor: float) -> None:
    rows = check_fixture(_doctored(tmp_path, case, field, factor))
    failed = {r.quantity for r in rows if not r.passed}
    assert field in failed
    assert all(r.error_over_tolerance > 1.0 for r in rows if not r.passed)
    assert all(r.error_over_tolerance <= 1.0 for r in rows if r.passed)
    assert {r.family for r in rows} == {"FastAP layer call"}


def test_cli_exit_1_on_a_doctored_fixture_and_writes_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    path = _doctored(tmp_path, "tiny_double", "objective", 1.001)
    shutil.copy(FASTAP / "tiny_single.mat", path.parent / "tiny_single.mat")
    status = _main(["parity", "--fixtures", str(path.parent), "--out", str(tmp_path / "o")],
                   monkeypatch)
    assert status == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "objective" in printed
    table = pd.read_csv(tmp_path / "o" / "parity" / "parity.csv")
    assert set(table["case"]) == {"tiny_double", "tiny_single"}
    bad = table[table["verdict"] == "fail"]
    assert list(bad["quantity"]) == ["objective"] and list(bad["case"]) == ["tiny_double"]
    # objective is held to rel 1e-12 and was scaled by 1.001: about 1e-3 / 1e-12 over
    assert bad["error_over_tolerance"].iloc[0] == pytest.approx(1e9, rel=0.01)
    assert (table.loc[table["verdict"] == "pass", "error_over_tolerance"] <= 1.0).all()
    assert (tmp_path / "o" / "parity" / "run_info.json").exists()


def test_cli_exit_0_on_good_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    status = _main(["parity", "--fixtures", str(FASTAP / "tiny_double.mat"),
                    str(FIXTURES / "recall_matlab" / "eval_ties.mat"),
                    "--out", str(tmp_path)], monkeypatch)
    assert status == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("parity:") and "OK" in last


def test_cli_exit_2_on_a_mat_that_is_no_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "weights.mat"
    scipy.io.savemat(other, {"w": np.ones((2, 2))})
    assert _main(["parity", "--fixtures", str(other), "--out", str(tmp_path)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "weights.mat" in err and "neither" in err


def test_cli_exit_2_on_unreadable_file_or_missing_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    junk = tmp_path / "junk.mat"
    junk.write_text("not a mat file")
    assert _main(["parity", "--fixtures", str(junk)], monkeypatch) == 2
    assert "junk.mat" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert _main(["parity", "--fixtures", str(missing)], monkeypatch) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_fixture_with_only_the_inputs_and_a_few_outputs_is_accepted(tmp_path: Path) -> None:
    """Other fixture sets may save fewer fields: whatever is saved is compared."""
    mat = scipy.io.loadmat(FASTAP / "m96_d128_nbins10_double.mat")
    path = tmp_path / "few.mat"
    scipy.io.savemat(path, {k: mat[k] for k in ("X", "Y", "nbins", "objective", "dInputs")})
    rows = check_fixture(path)
    assert {r.quantity for r in rows} == {"objective", "dInputs", "FastAPLoss.dInputs"}
    assert all(r.passed for r in rows)


def test_run_parity_rejects_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no .mat"):
        run_parity([tmp_path])


def test_unsqueezed_features_are_accepted(tmp_path: Path) -> None:
    """``inputs{1}`` saved as MatConvNet holds it (``1 x 1 x D x N``) is the same case."""
    mat = scipy.io.loadmat(FASTAP / "tiny_single.mat")
    mat["X"] = mat["X"].reshape(1, 1, *mat["X"].shape)
    path = tmp_path / "tiny_4d.mat"
    scipy.io.savemat(path, {k: v for k, v in mat.items() if not k.startswith("__")})
    rows = check_fixture(path)
    assert all(r.passed for r in rows) and len(rows) > 20


def _as_v73(source: Path, target: Path) -> Path:
    """``source`` (a v5 fixture) rewritten as MAT v7.3 by the project's writer."""
    from converters.matio.write import save_mat

    mat = {k: v for k, v in scipy.io.loadmat(source).items() if not k.startswith("__")}
    for k, v in mat.items():
        if getattr(v, "dtype", None) is not None and v.dtype.kind == "U":
            mat[k] = "\n".join(str(s) for s in v.ravel())
    return save_mat(target, mat, version="7.3") or target


@pytest.mark.parametrize("source", [FASTAP / "tiny_single.mat", FASTAP / "tiny_double.mat",
                                    FIXTURES / "recall_matlab" / "eval_ties.mat"])
def test_v73_fixture_files_are_checked_like_v5(tmp_path: Path, source: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    copy = _as_v73(source, tmp_path / source.name)
    assert copy.read_bytes()[:6] == b"MATLAB" and b"HDF" in copy.read_bytes()[512:520]
    v5_rows, v73_rows = check_fixture(source), check_fixture(copy)
    assert [(r.quantity, r.verdict, r.max_abs_err) for r in v73_rows] == \
        [(r.quantity, r.verdict, r.max_abs_err) for r in v5_rows]
    assert cli.main(["parity", "--fixtures", str(copy), "--out", str(tmp_path / "out")]) == 0
