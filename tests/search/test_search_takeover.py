"""A worker paused (SIGSTOP) past the others' patience: its trial is failed and queued again by
another worker; when it goes on, it drops that trial in one line and carries on. A store that
a paused worker keeps locked is said to be locked, never a full disk, and the parent run the
workers share is left to them."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from helpers import load, mlflow_runs, run_cli, seeded, write_study
from vaebench import search
from vaebench.cli import progress
from vaebench.search import recovery


def take_over(folder: Path, name: str, number: int) -> None:
    """What another worker's recovery does to a trial whose worker looks dead: FAIL, queued again."""
    study = load(folder, name)
    trial = next(t for t in study.trials if t.number == number)
    assert recovery.fail(study, trial, "worker died (paused)")
    assert search.requeue(study, trial, retry=True)


def test_a_trial_taken_over_meanwhile_is_dropped_in_one_line(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(folder, mlflow_template)
    real = progress.ProgressBar.on_epoch

    def paused_at_first_epoch(bar: Any, trial: int, epoch: int, epochs: int) -> None:
        if (trial, epoch) == (0, 1):
            take_over(folder, "paused", 0)
        real(bar, trial, epoch, epochs)

    monkeypatch.setattr(progress.ProgressBar, "on_epoch", paused_at_first_epoch)
    code, out, err = run_cli(folder, write_study(folder, "paused", {"seed": [0, 1]}, epochs=2))
    assert code == 0, err
    assert err.splitlines() == [
        "vaebench: trial 0 was taken over while this worker was paused: another worker failed it (worker died "
        "(paused)) and trial 1 runs it again; the result of this run is dropped"]
    assert "2/2 trials finished" in out
    study = load(folder, "paused")
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert study.trials[1].params == study.trials[0].params
    parents, children = mlflow_runs(folder, "paused")
    assert (parents[0].info.status, parents[0].data.tags["vaebench.state"]) == ("FINISHED", "COMPLETE")
    dropped = next(c for c in children if c.data.tags["vaebench.trial_number"] == "0")
    assert (dropped.info.status, dropped.data.tags["vaebench.state"]) == ("KILLED", "INTERRUPTED")
    assert dropped.data.tags["vaebench.failure_reason"].startswith("taken over while this worker was paused")
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED", "KILLED"]
    assert (folder / "results" / "paused" / "leaderboard.csv").is_file()


def test_a_trial_taken_over_after_its_last_epoch_is_dropped_too(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused during the final evaluation: the worker looks again before its run is COMPLETE."""
    from vaebench import trial as one_trial

    seeded(folder, mlflow_template)
    real, paused = one_trial.train_and_evaluate, []

    def paused_in_evaluation(cfg: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        final = real(cfg, *args, **kwargs)
        if not paused:
            paused.append(cfg.seed)
            take_over(folder, "late", 0)
        return final

    monkeypatch.setattr(one_trial, "train_and_evaluate", paused_in_evaluation)
    code, out, err = run_cli(folder, write_study(folder, "late", {"seed": [0, 1]}))
    assert code == 0, err
    assert len(err.splitlines()) == 1 and err.startswith("vaebench: trial 0 was taken over"), err
    study = load(folder, "late")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    _, children = mlflow_runs(folder, "late")
    assert sorted(c.data.tags["vaebench.state"] for c in children) == ["COMPLETE", "COMPLETE", "INTERRUPTED"]


def test_a_store_locked_by_a_paused_worker_is_not_a_full_disk(
    folder: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's lock held by a stopped worker past the wait, after the first trial: this worker
    stops saying so, and leaves the parent run, shared with the paused worker, RUNNING."""
    seeded(folder, mlflow_template)
    real, calls = recovery.close_orphan_runs, []

    def locked(*args: Any) -> None:
        calls.append(args)
        if len(calls) > 1:
            raise OperationalError("UPDATE runs", {}, sqlite3.OperationalError("database is locked"))
        real(*args)

    monkeypatch.setattr(recovery, "close_orphan_runs", locked)
    code, out, err = run_cli(folder, write_study(folder, "locked", {"seed": [0, 1]}))
    assert (code, out) == (1, ""), err
    line, = err.splitlines()
    assert line.startswith("vaebench: error: a store stayed locked mid-study (OperationalError: "), line
    assert "database is locked" in line and "`kill -CONT` it" in line and "free the space" not in line, line
    parents, _ = mlflow_runs(folder, "locked")
    assert parents[0].info.status == "RUNNING" and parents[0].data.tags.get("vaebench.state") in (None, "RUNNING")


def test_a_lock_met_as_the_study_opens_is_named_a_lock() -> None:
    failure = search.as_store_failure(OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")))
    assert failure is not None and "`kill -CONT` it" in str(failure) and "free the space" not in str(failure)
