"""A standard output that fails (`vaebench run | head -1`, `> /dev/full`) costs its lines only:
the study and its report are written, one line on stderr says what was lost, no traceback."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mlflow_runs, seeded, user_env, write_study
from vaebench.cli import commands as cli


class Full(io.StringIO):
    """A stdout on a full disk: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_a_full_stdout_still_gets_the_study_and_its_report(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    study = write_study(folder, "tiny", {"seed": [0, 1]})
    err = io.StringIO()
    with contextlib.redirect_stdout(Full()), contextlib.redirect_stderr(err):
        code = cli.main(["run", "--study", str(study), "--no-progress", "--threads", "1",
                         "--storage", "sqlite:///optuna.db", "--tracking-uri", "sqlite:///mlflow.db"])
    assert code == 1
    assert err.getvalue().splitlines() == [
        "vaebench: standard output: [Errno 28] No space left on device; the lines written there were lost, "
        "nothing else (the command ran to its end)"]
    assert (folder / "results" / "tiny" / "report.md").is_file()
    _, children = mlflow_runs(folder, "tiny")
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]


@pytest.mark.slow  # real CLI processes
def test_dev_full_and_a_closed_pipe_cost_no_results(tmp_path: Path, mlflow_template: Path) -> None:
    seeded(tmp_path, mlflow_template)
    write_study(tmp_path, "tiny", {"seed": [0, 1]})
    argv = [sys.executable, "-m", "vaebench", "run", "--study", "tiny.yaml", "--no-progress", "--threads", "1"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, cwd=tmp_path, env=user_env(), stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("vaebench: standard output: [Errno 28] No space left on device;")
    assert (tmp_path / "results" / "tiny" / "report.md").is_file()
    (tmp_path / "results" / "tiny" / "report.md").unlink()
    # `vaebench report | head -0`: the reader is gone before the first line
    proc = subprocess.Popen([sys.executable, "-m", "vaebench", "report", "--study", "tiny.yaml"], cwd=tmp_path,
                            env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=600) == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines() == ["vaebench: standard output: [Errno 32] Broken pipe; the lines written there were lost, "
                                "nothing else (the command ran to its end)"]
    assert (tmp_path / "results" / "tiny" / "report.md").is_file()
