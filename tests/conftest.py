"""Shared fixtures: one real smoke study, run once per session through the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CALL_REPORT = pytest.StashKey[pytest.TestReport]()  # a test's outcome, for fixtures that keep evidence of failures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


def vaebench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m vaebench ARGS` in `cwd`, as a user would run it (no MLflow env overrides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "vaebench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which `vaebench run --study smoke` has finished (2 betas x 2 seeds), with
    the charts and MLflow model for the best trial only (the default, all, is tested apart)."""
    cwd = tmp_path_factory.mktemp("smoke")
    result = vaebench(cwd, "run", "--study", "smoke", "--no-progress", "--tensorboard", "tb", "--artifacts", "best")
    assert result.returncode == 0, result.stderr
    assert "leaderboard: results/smoke/leaderboard.csv" in result.stdout
    return cwd
