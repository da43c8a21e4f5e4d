"""The package as a user installs it: a wheel in a fresh environment, run from another folder.

The wheel is built from this checkout and installed without its dependencies into a new
virtual environment, which borrows the already installed torch and friends through a path
entry (``.pth`` lines add a folder to ``sys.path`` without running the ``.pth`` files inside
it, so this checkout's editable install does not leak in). Everything the commands read by
default must then come from the installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _run(args: list[str | os.PathLike[str]], cwd: Path, timeout: int = 600
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([os.fspath(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel of this checkout installed; returns its bin/."""
    base = tmp_path_factory.mktemp("installed")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", base / "dist", ROOT], cwd=base)
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("fastap_repro-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=base).stdout.strip())
    # the dependencies already installed here (torch, numpy, ...), without running their .pth
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
                cwd=base)
    assert done.returncode == 0, done.stderr
    return env_dir / "bin"


def test_the_installed_package_is_the_one_imported(installed: Path, tmp_path: Path) -> None:
    found = _run([installed / "python", "-c",
                  "import reproduce, converters, logs; "
                  "print(reproduce.__file__, converters.__file__, logs.__file__)"], cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    for path in found.stdout.split():
        assert str(installed.parent) in path and str(ROOT) not in path, path


def test_parity_runs_from_any_folder(installed: Path, tmp_path: Path) -> None:
    done = _run([installed / "fastap", "--quiet", "parity", "--out", "out"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "comparisons passed" in done.stdout and "OK" in done.stdout
    assert (tmp_path / "out" / "parity" / "parity.csv").is_file()


def test_main_job_runs_from_any_folder(installed: Path, tmp_path: Path) -> None:
    done = _run([installed / "fastap", "--quiet", "reproduce", "--out", "out"], cwd=tmp_path,
                timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "out" / "reproduce" / "summary.md").read_text()
    assert "## parity: ok" in summary
    assert str(ROOT) not in summary  # nothing read from the source tree
