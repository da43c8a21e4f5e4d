"""The project's foundations: packaging metadata and the command line."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reproduce.cli.commands import SUBCOMMANDS
from reproduce.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[3]

# conda and PyPI spell two packages differently
_CONDA_TO_PYPI = {"pytorch": "torch"}


def _pyproject_dependencies() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0].lower()
            for dep in data["project"]["dependencies"]}


def _environment_dependencies() -> set[str]:
    names = set()
    text = (ROOT / "environment.yml").read_text()
    block = text.split("\ndependencies:\n", 1)[1]  # the channels list is not packages
    for line in block.splitlines():
        match = re.match(r"^  -\s+([A-Za-z][A-Za-z0-9_.-]*)\s*([<>=!~].*)?$", line)
        if match and match.group(1) not in {"python", "pip"}:
            name = match.group(1).lower()
            names.add(_CONDA_TO_PYPI.get(name, name))
    return names


def test_environment_yml_names_the_same_packages_as_pyproject() -> None:
    assert _environment_dependencies() == _pyproject_dependencies()


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    sub_action = next(a for a in parser._actions if a.dest == "command")
    assert set(sub_action.choices) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert callable(sub_action.choices[name].get_default("func")), name


@pytest.mark.parametrize("entry", [["fastap"], [sys.executable, "-m", "reproduce"]])
def test_console_command_and_module_both_run(entry: list[str]) -> None:
    if entry == ["fastap"]:
        exe = Path(sys.executable).with_name("fastap")
        if not exe.exists():
            pytest.skip("console script not installed in this environment")
        entry = [str(exe)]
    done = subprocess.run([*entry, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in SUBCOMMANDS:
        assert name in done.stdout
