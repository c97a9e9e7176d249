"""search.recovery, driven on a journal file in this process: trials of dead workers are failed,
queued again once and their runs closed; a trial cut short by Ctrl-C is failed and queued."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from helpers import mlflow_runs, worker_on_journal
from vaebench import search
from vaebench.search import closing
from vaebench.search.worker import _Current


def test_dead_worker_on_a_journal_file_is_failed_and_retried_once(tmp_path: Path, mlflow_template: Path) -> None:
    """A journal file has no heartbeat: vaebench itself sees that a worker of this host died."""
    worker = worker_on_journal(tmp_path, mlflow_template, "orphans")
    spec, study, tracker, parent = worker.spec, worker.study, worker.tracker, worker.parent_id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = {"host": socket.gethostname(), "pid": gone.pid, "start": "1"}

    def orphan() -> optuna.Trial:
        """Pop the next trial (a new one, else the queued retry) as the dead process would."""
        trial = study.ask()
        search.suggest(trial, spec)
        trial.set_user_attr(search.WORKER_ATTR, dead | {"trial": trial.number})
        tracker.start_trial(parent, trial.number, f"t{trial.number}", {})
        return trial

    first = orphan()
    worker.sweep()
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["failure_reason"] == f"worker died ({socket.gethostname()}/{gone.pid})"
    assert trials[1].params == first.params and RetryHeartbeatStaleTrialCallback.retry_history(trials[1]) == [0]
    assert worker.retried == [0]
    _, children = mlflow_runs(tmp_path, "orphans")
    assert [(c.info.status, c.data.tags["vaebench.state"]) for c in children] == [("FAILED", "FAIL")]

    retry = orphan()  # the retry dies too: failed, not queued a second time
    assert retry.number == 1 and retry.params == first.params
    worker.sweep()
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]
    assert worker.retried == [0]

    alive = orphan()  # a live worker's trial (this process) is left alone
    alive.set_user_attr(search.WORKER_ATTR, vars(search.Process.current()) | {"trial": alive.number})
    copied = orphan()  # a dead worker's record copied from the trial it re-runs: not this trial's worker
    copied.set_user_attr(search.WORKER_ATTR, dead | {"trial": 0})
    worker.sweep()
    assert [t.state.name for t in study.get_trials()][-2:] == ["RUNNING", "RUNNING"]


def test_a_trial_stopped_before_optuna_recorded_it_is_failed_and_queued(folder: Path, mlflow_template: Path) -> None:
    """A second Ctrl-C can land between the trial's end and Optuna's record of it: the trial
    would stay RUNNING, its child run too. The worker's clean-up fails, closes and re-queues it."""
    worker = worker_on_journal(folder, mlflow_template, "cut")
    trial = worker.study.ask()
    search.suggest(trial, worker.spec)
    run = worker.tracker.start_trial(worker.parent_id, 0, "t000", {})
    worker.current = _Current(trial.number, run)
    closing.close_interrupted(worker)
    stopped, queued = worker.study.get_trials()
    assert (stopped.state.name, queued.state.name) == ("FAIL", "WAITING") and queued.params == stopped.params
    assert stopped.user_attrs["failure_reason"] == "interrupted (Ctrl-C)"
    _, children = mlflow_runs(folder, "cut")
    assert [(c.info.status, c.data.tags["vaebench.state"]) for c in children] == [("KILLED", "INTERRUPTED")]


def test_a_retry_counts_once_and_a_ctrl_c_rerun_keeps_the_count() -> None:
    """requeue writes the retry history as Optuna's heartbeat callback does, read back here
    with Optuna's public readers; a re-run after Ctrl-C carries it over uncounted."""
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"x": 0.5}, distributions=dist))
    history = RetryHeartbeatStaleTrialCallback.retry_history
    first = study.trials[0]

    assert search.requeue(study, first, retry=True)
    retry = study.trials[1]
    assert retry.state.name == "WAITING" and retry.params == {"x": 0.5}
    assert history(retry) == [0] and RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.user_attrs == {"vaebench.requeued_from": 0}

    assert not search.requeue(study, retry, retry=True)  # the one retry is spent
    assert search.requeue(study, retry, retry=False)  # Ctrl-C: queued, not counted
    rerun = study.trials[2]
    assert history(rerun) == [0] and RetryHeartbeatStaleTrialCallback.retried_trial_number(rerun) == 0
    assert search.requeue(study, first, retry=False) and history(study.trials[3]) == []
