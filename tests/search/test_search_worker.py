"""Workers that die, get stopped, or run side by side: nothing lost, nothing duplicated.

Each test runs real `python -m vaebench run` processes on a tiny study (digits, an MLP with
32 hidden units, a 2-d latent) in a temp folder, then reads what Optuna and MLflow hold. A
run that only has to finish the study runs in this process (`run_cli`): it spares the
seconds a new process spends importing torch and MLflow.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback

from helpers import (
    children_by_trial, epochs_reported, finish, load, mlflow_runs, run_cli, seeded, spawn, wait_until, write_study,
)
from vaebench import report, search  # noqa: F401 - imported now, an in-process run starts at once
from vaebench import trial as one_trial
from vaebench.tracking import StudyTracker, TrialRun

# -- failing trials (in this process) -----------------------------------------------


def test_a_diverging_trial_fails_and_the_study_goes_on(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    study_file = write_study(folder, "diverge", {"train.lr": [3e-3, 1e6], "seed": [0]})
    code, _, err = run_cli(folder, study_file)
    assert code == 0, err
    assert err.splitlines() == [
        "vaebench: 1 trial failed: DivergenceError: non-finite train_loss, val_recon, val_kl, val_elbo at epoch 1"
        " (trial 0) (reasons: tag vaebench.failure_reason in MLflow)"]
    study = load(folder, "diverge")
    by_lr = {t.params["train.lr"]: t for t in study.trials}
    assert by_lr[1e6].state.name == "FAIL" and by_lr[3e-3].state.name == "COMPLETE"
    assert by_lr[1e6].user_attrs["failure_reason"].startswith("DivergenceError: non-finite train_loss")
    parents, children = mlflow_runs(folder, "diverge")
    status = {float(c.data.params["train.lr"]): c for c in children}
    assert status[1e6].info.status == "FAILED" and status[1e6].data.tags["vaebench.state"] == "FAIL"
    assert status[1e6].data.tags["vaebench.failure_reason"].startswith("DivergenceError: non-finite")
    assert status[3e-3].info.status == "FINISHED"
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["vaebench.state"] == "INCOMPLETE"
    assert (folder / "results" / "diverge" / "leaderboard.csv").is_file()


def test_a_raising_trial_fails_and_the_study_goes_on(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(folder, mlflow_template)
    real = one_trial.train_and_evaluate

    def flaky(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        if cfg.seed == 1:
            raise OSError(28, "No space left on device")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(one_trial, "train_and_evaluate", flaky)
    code, out, err = run_cli(folder, write_study(folder, "flaky", {"seed": [0, 1, 2]}))
    assert code == 0, err
    assert "study flaky: 2/3 trials finished" in out
    assert err.splitlines() == ["vaebench: 1 trial failed: OSError: [Errno 28] No space left on device (trial 1)"
                                " (reasons: tag vaebench.failure_reason in MLflow)"]
    _, children = mlflow_runs(folder, "flaky")
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]

    monkeypatch.setattr(one_trial, "train_and_evaluate", real)  # the disk has room again: the point is re-run
    code, out, err = run_cli(folder, folder / "flaky.yaml")
    assert code == 0 and err == "", err
    assert [t.state.name for t in load(folder, "flaky").trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    parents, _ = mlflow_runs(folder, "flaky")
    assert parents[0].info.status == "FINISHED"


def test_a_study_whose_every_trial_fails_exits_1_with_one_line(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    code, _, err = run_cli(folder, write_study(folder, "doomed", {"seed": [0, 1]}, lr=1e6))
    assert code == 1
    assert err.splitlines() == [
        "vaebench: no trial finished: 2 trials failed: DivergenceError: non-finite train_loss, val_recon, val_kl,"
        " val_elbo at epoch 1 (trials 0, 1)"]
    assert [t.state.name for t in load(folder, "doomed").trials] == ["FAIL", "FAIL"]
    parents, children = mlflow_runs(folder, "doomed")
    assert parents[0].info.status == "FAILED" and [c.info.status for c in children] == ["FAILED"] * 2
    assert not (folder / "results").exists()


def test_a_trial_that_fails_before_its_run_points_to_optuna_for_its_reason(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(folder, mlflow_template)
    real = one_trial.load_data

    def unlucky(cfg: Any, *args: Any) -> Any:
        if cfg.seed == 1:
            raise OSError(5, "Input/output error")
        return real(cfg, *args)

    monkeypatch.setattr(one_trial, "load_data", unlucky)
    code, _, err = run_cli(folder, write_study(folder, "early", {"seed": [0, 1]}))
    number = next(t.number for t in load(folder, "early").trials if t.params["seed"] == 1)
    assert code == 0 and err.splitlines() == [
        f"vaebench: 1 trial failed: OSError: [Errno 5] Input/output error (trial {number}) (reasons: user attribute"
        f" failure_reason of Optuna trial {number}, which had no MLflow run)"], err


# -- Ctrl-C and stores that fail, in this process ---------------------------------------


def test_ctrl_c_before_any_trial_ends_says_the_command_resumes(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(folder, mlflow_template)
    real_fit = one_trial.train_and_evaluate

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        signal.raise_signal(signal.SIGINT)  # stop after the first epoch
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(one_trial, "train_and_evaluate", fit)
    code, _, err = run_cli(folder, write_study(folder, "early", {"seed": [0]}, epochs=3))
    assert code == 130, err
    assert "vaebench: no trial finished: stopped before any trial ended; the same command resumes" in err
    assert [t.state.name for t in load(folder, "early").trials] == ["FAIL", "WAITING"]


def test_a_second_ctrl_c_while_the_runs_are_closed_still_closes_them(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """Ctrl-C in trial `seed 1`, then again as its run is ended and as the parent run is ended:
    the worker closes every run all the same, and the report covers the finished trial."""
    seeded(folder, mlflow_template)
    real_fit, real_finish, real_end = one_trial.train_and_evaluate, TrialRun.finish, StudyTracker.end_parent

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        if cfg.seed == 1:
            signal.raise_signal(signal.SIGINT)  # the first: stop after this epoch
        return real_fit(cfg, *args, **kwargs)

    def finish(run: TrialRun, state: str, reason: str | None = None) -> None:
        if state == "INTERRUPTED":
            signal.raise_signal(signal.SIGINT)  # again, as the trial is being failed
        real_finish(run, state, reason)

    def end_parent(tracker: StudyTracker, *args: Any) -> None:
        signal.raise_signal(signal.SIGINT)  # and again, as the parent run is ended
        real_end(tracker, *args)

    monkeypatch.setattr(one_trial, "train_and_evaluate", fit)
    monkeypatch.setattr(TrialRun, "finish", finish)
    monkeypatch.setattr(StudyTracker, "end_parent", end_parent)
    code, _, err = run_cli(folder, write_study(folder, "twice", {"seed": [0, 1]}))
    assert code == 130, err
    said = capfd.readouterr().err  # the signal handler writes to the process's stderr itself
    assert said.count("vaebench: closing the runs; a moment") == 2 and "Traceback" not in err + said, said
    study = load(folder, "twice")
    states = {t.params.get("seed"): t.state.name for t in study.trials if t.state.name != "WAITING"}
    assert states == {0: "COMPLETE", 1: "FAIL"} or states == {1: "FAIL"}, states
    assert [t.params["seed"] for t in study.trials if t.state.name == "WAITING"] == [1]  # queued again
    parents, children = mlflow_runs(folder, "twice")
    assert (parents[0].info.status, parents[0].data.tags["vaebench.state"]) == ("KILLED", "INTERRUPTED")
    assert "RUNNING" not in [c.info.status for c in children]


def test_ctrl_c_after_the_last_trial_or_in_the_report_asks_for_no_resume(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(folder, mlflow_template)
    real_fit, real_report = one_trial.train_and_evaluate, report.write_report
    calls = []

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        out = real_fit(cfg, *args, **kwargs)
        calls.append(cfg.seed)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C, once the last trial has trained
        return out

    def interrupted_report(*args: Any) -> Any:
        signal.raise_signal(signal.SIGINT)  # the second, while the report is written
        return real_report(*args)

    monkeypatch.setattr(one_trial, "train_and_evaluate", fit)
    monkeypatch.setattr(report, "write_report", interrupted_report)
    code, out, err = run_cli(folder, write_study(folder, "done", {"seed": [0, 1]}))
    assert code == 1, err
    assert "study done: 2/2 trials finished" in out
    assert err.splitlines()[-1] == ("vaebench: report stopped by Ctrl-C; the study is complete: `python -m vaebench "
                                    f"report --study {folder / 'done.yaml'} --results results` writes it")
    assert "resume" not in err
    parents, _ = mlflow_runs(folder, "done")
    assert parents[0].data.tags["vaebench.state"] == "COMPLETE"

    monkeypatch.setattr(report, "write_report", real_report)
    calls.clear()
    code, _, err = run_cli(folder, folder / "done.yaml")
    assert code == 0 and err == "", err


def test_a_store_that_fails_mid_study_closes_the_runs_in_one_line(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills during trial `seed 1`: training fails, then so does Optuna's record of it."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    seeded(folder, mlflow_template)
    full = []
    real_fit, real_set = one_trial.train_and_evaluate, optuna.storages.RDBStorage.set_trial_state_values

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        if cfg.seed == 1:
            full.append(True)
            raise OSError(28, "No space left on device")
        return real_fit(cfg, *args, **kwargs)

    def set_state(storage: Any, *args: Any, **kwargs: Any) -> bool:
        if full:
            raise OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database or disk is full"))
        return real_set(storage, *args, **kwargs)

    monkeypatch.setattr(one_trial, "train_and_evaluate", fit)
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", set_state)
    code, out, err = run_cli(folder, write_study(folder, "full", {"seed": [0, 1]}))
    assert code == 1 and out == "", (out, err)
    line, = err.splitlines()
    assert line.startswith("vaebench: error: a store failed mid-study (OperationalError: ") and "disk is full" in line
    number = next(t.number for t in load(folder, "full").trials if t.params.get("seed") == 1)
    assert f"trial {number} failed, its Optuna trial left for the next run to close;" in line, line
    parents, children = mlflow_runs(folder, "full")
    assert (parents[0].info.status, parents[0].data.tags["vaebench.state"]) == ("FAILED", "INCOMPLETE")
    assert "RUNNING" not in [c.info.status for c in children]


def test_a_store_that_cannot_be_written_as_the_study_opens_is_one_line(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run while the disk is still full: the parent run cannot be reopened."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    def reopen(tracker: StudyTracker, run_id: str) -> None:
        raise OperationalError("UPDATE runs", {}, sqlite3.OperationalError("database or disk is full"))

    seeded(folder, mlflow_template)
    monkeypatch.setattr(StudyTracker, "reopen", reopen)
    code, out, err = run_cli(folder, write_study(folder, "still", {"seed": [0, 1]}))
    assert (code, out) == (1, ""), err
    assert err.splitlines() == ["vaebench: error: cannot write to the stores (OperationalError: (sqlite3.OperationalError) "
                                "database or disk is full); free the space or bring the store back, then run the same "
                                "command again to resume"]


# -- worker processes -------------------------------------------------------------------


def assert_study_complete(cwd: Path, name: str, total: int, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """Exactly `total` COMPLETE trials, any FAIL trial accounted for, one parent run
    (FINISHED), one FINISHED child run per complete trial number, all under that parent."""
    study = load(cwd, name, storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == total, states
    assert set(states) <= {"COMPLETE", "FAIL"}, states
    parents, children = mlflow_runs(cwd, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert study.user_attrs["mlflow_parent_run_id"] == parents[0].info.run_id
    by_trial = children_by_trial(children)
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            run = by_trial[trial.number]
            assert run.info.status == "FINISHED" and run.data.tags["vaebench.state"] == "COMPLETE"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert all(c.info.status != "RUNNING" for c in children)
    return study, by_trial


def assert_shared(study: optuna.Study, total: int) -> set[int]:
    """`total` distinct values, trials that never ran are marked so; the pids that ran trials."""
    for trial in study.trials:
        if trial.state.name == "FAIL":  # a trial one worker started when the other had filled the study
            assert trial.user_attrs["failure_reason"].startswith("not run:"), trial.user_attrs
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == total  # no values drawn twice
    return {t.user_attrs["vaebench.worker"]["pid"] for t in complete}


@pytest.mark.slow  # worker processes
def test_two_workers_start_a_new_sqlite_study_at_once(tmp_path: Path) -> None:
    """From an empty folder: both race to create optuna.db and mlflow.db, then share the study."""
    write_study(tmp_path, "pair", {"model.beta": [0.5, 1.0], "seed": [0, 1]})
    workers = [spawn(tmp_path, "run", "--study", "pair.yaml", "--no-progress", "--threads", "1") for _ in range(2)]
    for code, _, err in [finish(w) for w in workers]:
        assert code == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    study, _ = assert_study_complete(tmp_path, "pair", 4)
    assert_shared(study, 4)


def test_the_preflight_reads_the_stores_under_the_setup_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's checks before the run read the stores while holding the folder's lock, so they
    never see an mlflow.db another worker is still creating (its migrations half run)."""
    import fcntl

    from vaebench.errors import InputError

    held = []

    def probe(*_: Any) -> None:
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        raise InputError("probed")

    monkeypatch.setattr(search, "check_before_run", probe)
    code, _, err = run_cli(tmp_path, write_study(tmp_path, "locked", {"seed": [0]}))
    assert code == 2 and "probed" in err and held == [True], (held, err)


@pytest.mark.slow  # worker processes
def test_a_worker_process_and_this_one_share_a_journal_file(folder: Path, mlflow_template: Path) -> None:
    seeded(folder, mlflow_template)
    write_study(folder, "pair", {"model.beta": {"low": 0.5, "high": 4.0}}, sampler="random", n_trials=4,
                epochs=10, batch_size=32)
    flags = ("--storage", "pair.journal")
    other = spawn(folder, "run", "--study", "pair.yaml", "--no-progress", "--threads", "1", *flags)

    def training() -> bool:
        with contextlib.suppress(KeyError, FileNotFoundError):  # no study yet
            return any(t.state.name == "RUNNING" for t in load(folder, "pair", "pair.journal").trials)
        return False

    wait_until(other, training)
    code, _, err = run_cli(folder, "pair.yaml", *flags)
    assert code == 0, err
    code, _, err = finish(other)
    assert code == 0 and "Traceback" not in err, err
    study, _ = assert_study_complete(folder, "pair", 4, "pair.journal")
    assert assert_shared(study, 4) == {other.pid, os.getpid()}


def worker_in_trial(folder: Path, name: str, number: int) -> subprocess.Popen:
    """A worker on a 2-trial study (20 epochs of 40 steps each), once trial `number` has
    finished its first epoch."""
    write_study(folder, name, {"seed": [0, 1]}, epochs=20, batch_size=32)
    worker = spawn(folder, "run", "--study", f"{name}.yaml", "--no-progress", "--threads", "1")
    wait_until(worker, lambda: epochs_reported(folder / "optuna.db", number) >= 1)
    return worker


@pytest.mark.slow  # worker processes
def test_kill_9_mid_trial_then_resume(folder: Path, mlflow_template: Path) -> None:
    tmp_path = seeded(folder, mlflow_template)
    worker = worker_in_trial(tmp_path, "killed", 0)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert [t.state.name for t in load(tmp_path, "killed").trials] == ["RUNNING"]
    assert [c.info.status for c in mlflow_runs(tmp_path, "killed")[1]] == ["RUNNING"]

    code, out, err = run_cli(tmp_path, "killed.yaml")
    assert code == 0, err
    assert "1 re-queued after their worker died" in out
    study, by_trial = assert_study_complete(tmp_path, "killed", 2)
    orphan, *rest = study.trials
    assert orphan.state.name == "FAIL"
    assert orphan.user_attrs["failure_reason"] == f"worker died ({socket.gethostname()}/{worker.pid})"
    assert by_trial[0].info.status == "FAILED"
    assert by_trial[0].data.tags["vaebench.failure_reason"].startswith("worker died (")
    retry = next(t for t in rest if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0)
    assert retry.state.name == "COMPLETE" and retry.params == orphan.params
    assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [0]
    assert len(study.trials) == 3  # the orphan, its one retry, the other grid point


@pytest.mark.slow  # worker processes
def test_ctrl_c_stops_after_the_epoch_then_resumes(folder: Path, mlflow_template: Path) -> None:
    tmp_path = seeded(folder, mlflow_template)
    worker = worker_in_trial(tmp_path, "stopped", 1)
    worker.send_signal(signal.SIGINT)
    code, _, err = finish(worker)
    assert code == 130, err
    assert "stopping after this epoch; Ctrl-C again to stop now" in err
    assert "Traceback" not in err

    study = load(tmp_path, "stopped")
    first, stopped, queued = study.trials
    assert (first.state.name, stopped.state.name, queued.state.name) == ("COMPLETE", "FAIL", "WAITING")
    assert stopped.user_attrs["failure_reason"] == "interrupted (Ctrl-C)"
    assert len(stopped.intermediate_values) < 20  # it stopped at an epoch's end, not at the last
    assert queued.params == stopped.params
    parents, children = mlflow_runs(tmp_path, "stopped")
    assert parents[0].info.status == "KILLED"
    killed = children_by_trial(children)[1]
    assert killed.info.status == "KILLED" and killed.data.tags["vaebench.state"] == "INTERRUPTED"
    assert (tmp_path / "results" / "stopped" / "leaderboard.csv").is_file()  # the report covers trial 0

    code, _, err = run_cli(tmp_path, "stopped.yaml")
    assert code == 0, err
    study, by_trial = assert_study_complete(tmp_path, "stopped", 2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].params == stopped.params and sorted(by_trial) == [0, 2]
    # the re-run went on from the checkpoint the Ctrl-C wrote, in the interrupted trial's run
    resumed = by_trial[2]
    assert resumed.info.run_id == killed.info.run_id
    # Optuna got epochs up to the one before the stop; the checkpoint also holds the stopped epoch
    assert int(resumed.data.tags["vaebench.resumed_at_epoch"]) == len(stopped.intermediate_values) + 2
    assert sorted(study.trials[2].intermediate_values) == list(range(1, 21))  # the pruner sees the whole curve
