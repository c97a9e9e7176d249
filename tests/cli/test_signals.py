"""SIGTERM (SLURM, Kubernetes, kill) and SIGHUP (a closed terminal) stop a study as Ctrl-C
does: the epoch ends with its checkpoint, the runs are closed, the trial is queued again,
and the exit code names the signal (143, 129)."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from helpers import finish, load, mlflow_runs, run_cli, seeded, spawn, wait_until, epochs_reported, write_study
from vaebench import trial as one_trial


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_closes_the_runs_and_exits_with_its_code(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture,
    signum: int, code: int,
) -> None:
    seeded(folder, mlflow_template)
    real_fit = one_trial.train_and_evaluate

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        signal.raise_signal(signum)  # stop after the first epoch
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(one_trial, "train_and_evaluate", fit)
    previous = signal.getsignal(signum)
    got, _, err = run_cli(folder, write_study(folder, "early", {"seed": [0]}, epochs=3))
    assert got == code, err
    said = capfd.readouterr().err  # the handler writes to the process's stderr itself
    assert f"vaebench: {signal.Signals(signum).name}: stopping after this epoch; a second signal to stop now" in said
    assert "Traceback" not in err + said
    assert [t.state.name for t in load(folder, "early").trials] == ["FAIL", "WAITING"]
    parents, children = mlflow_runs(folder, "early")
    assert parents[0].info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]
    assert list((folder / "checkpoints").rglob("*.safetensors"))  # the stopped epoch is kept
    assert signal.getsignal(signum) is previous


@pytest.mark.slow  # a worker process
def test_sigterm_to_a_real_worker_checkpoints_and_the_rerun_goes_on_from_there(
    folder: Path, mlflow_template: Path
) -> None:
    seeded(folder, mlflow_template)
    write_study(folder, "termed", {"seed": [0]}, epochs=20, batch_size=32)
    worker = spawn(folder, "run", "--study", "termed.yaml", "--no-progress", "--threads", "1")
    wait_until(worker, lambda: epochs_reported(folder / "optuna.db", 0) >= 1)
    worker.send_signal(signal.SIGTERM)
    code, _, err = finish(worker)
    assert code == 143 and "Traceback" not in err, err
    parents, children = mlflow_runs(folder, "termed")
    assert parents[0].info.status == "KILLED" and children[0].info.status == "KILLED"
    code, _, err = run_cli(folder, "termed.yaml")
    assert code == 0, err
    _, children = mlflow_runs(folder, "termed")
    assert int(children[0].data.tags["vaebench.resumed_at_epoch"]) > 1  # not from epoch 0
