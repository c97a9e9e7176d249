"""The package installs as promised: a wheel built from this checkout, installed into a fresh
virtual environment, runs a shipped study by name from an empty folder.

The fresh environment borrows this interpreter's site-packages for the dependencies (torch,
MLflow, Optuna) through a .pth line instead of installing them again (gigabytes). A folder
added by a .pth line has its own .pth files ignored, so an editable vaebench installed there
stays inactive: the vaebench that runs is the wheel's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow  # builds a wheel, makes a virtual environment, runs a study


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built from a copy (the build leaves build/ and egg-info behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "vaebench", source / "vaebench", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, source,
        cwd=source)
    return next(out.glob("vaebench-*.whl"))


def test_the_wheel_ships_every_study_and_the_top_level_folder_is_the_same(wheel: Path) -> None:
    """vaebench/studies is the one source; studies/ at the top is a link to it for users."""
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(Path(n).name for n in archive.namelist() if n.startswith("vaebench/studies/"))
    assert shipped == sorted(p.name for p in (REPO / "vaebench" / "studies").glob("*.yaml")) and shipped
    assert (REPO / "studies").resolve() == (REPO / "vaebench" / "studies").resolve()


def test_an_installed_wheel_runs_a_shipped_study_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                .stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    where = run(python, "-c", "import vaebench; print(vaebench.__file__)", cwd=empty, env=env).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's vaebench, not this checkout's
    listed = run(python, "-m", "vaebench", "list", cwd=empty, env=env).stdout
    shipped = sorted(p.stem for p in (REPO / "vaebench" / "studies").glob("*.yaml"))
    assert f"studies:        {', '.join(shipped)}" in listed
    result = run(python, "-m", "vaebench", "run", "--study", "smoke", "--trials", "1", "--no-progress",
                 "--artifacts", "best", cwd=empty, env=env)
    assert "study smoke: 1/1 trials finished" in result.stdout
    assert (empty / "results" / "smoke" / "leaderboard.csv").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["mlflow.db", "mlruns", "optuna.db", "results"]
