"""The CLI's one error mapping: the user's situation is one line and exit 2, a bug a traceback."""

from __future__ import annotations

import argparse
import importlib

import pytest

import converters
import logs
import reproduce
import reproduce.errors
from converters import errors
from converters.errors import CheckFailedError, DatasetError, LogFormatError, MatConvNetError
from reproduce.cli import main as cli


def _run_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> int:
    """``fastap inspect X`` with its work replaced by raising ``exc``."""
    def raising(_args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr("reproduce.cli.commands.inspect.run", raising)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, raising))
    return cli.main(["inspect", "anything.mat"])


def _with_func(parser: argparse.ArgumentParser, func: object) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices["inspect"].set_defaults(func=func)
    return parser


def test_every_area_is_one_hierarchy() -> None:
    for area in ("InputError", "InputFileError", "MatConvNetError", "DatasetError",
                 "LogFormatError", "CheckFailedError"):
        assert issubclass(getattr(errors, area), errors.FastAPReproError), area
        assert getattr(reproduce.errors, area) is getattr(errors, area)
    assert logs.LogFormatError is LogFormatError
    assert CheckFailedError.exit_status == 1 and errors.InputError.exit_status == 2


@pytest.mark.parametrize("exc,status,needle", [
    (DatasetError("Ebay_test.txt:7: 3 fields, expected 4"), 2, "Ebay_test.txt:7"),
    (MatConvNetError("net.mat: layer 'conv9' of unknown type"), 2, "conv9"),
    (FileNotFoundError(2, "No such file or directory", "absent.mat"), 2, "absent.mat"),
    (CheckFailedError("3 comparisons beyond tolerance"), 1, "beyond tolerance"),
    (MemoryError(), 2, "out of memory"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_user_situations_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str],
                                      exc: BaseException, status: int, needle: str) -> None:
    assert _run_with(monkeypatch, exc) == status
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert err.startswith("fastap inspect: error: ")


@pytest.mark.parametrize("bug", [KeyError("card"), ValueError("could not broadcast"),
                                 TypeError("unsupported operand")])
def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, bug: Exception) -> None:
    with pytest.raises(type(bug)):
        _run_with(monkeypatch, bug)


def test_quiet_silences_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def work(_args: argparse.Namespace) -> int:
        from tqdm import tqdm

        seen.append(tqdm(range(3)).disable)
        seen.append(tqdm(range(3), disable=False).disable)  # an explicit request too
        return 0

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, work))
    assert cli.main(["--quiet", "inspect", "x.mat"]) == 0
    assert cli.main(["inspect", "x.mat"]) == 0
    assert seen[:2] == [True, True] and seen[2:] == [False, False]


@pytest.mark.parametrize("root,names", [
    (reproduce, ["FastAPLoss", "fastap_loss", "load_model", "load_mat", "read_network",
                 "recall_at_k", "evaluate", "parse_diaries", "load_dataset", "run_parity"]),
    (converters, ["load_mat", "read_network", "convert_network", "load_model", "ModelCard"]),
    (logs, ["parse_diaries", "parse_diary", "epochs_table"]),
])
def test_public_api_from_the_package_roots(root: object, names: list[str]) -> None:
    for name in names:
        assert callable(getattr(root, name)), name
        assert name in root.__all__  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = root.no_such_entry_point


def test_parse_diaries_takes_a_folder(tmp_path) -> None:  # noqa: ANN001
    sample = importlib.import_module("logs.simulator").SAMPLES_DIR
    folder = next(p.parent for p in sorted(sample.rglob("diary_001.txt")))
    run = logs.parse_diaries(folder)
    assert run.epochs and run.epochs == logs.parse_diaries(sorted(folder.glob("diary_*.txt"))
                                                           ).epochs
    with pytest.raises(LogFormatError, match="no diary"):
        logs.parse_diaries(tmp_path)
