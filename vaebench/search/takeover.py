"""A trial taken over by another worker while this one was paused (SIGSTOP, a laptop lid, a
debugger, a VM frozen past Optuna's heartbeat grace period).

The other worker's recovery has failed the trial and queued a re-run (recovery, Optuna's
heartbeat) by the time this worker goes on. Its result would be a second copy of the re-run's,
and Optuna refuses to tell a finished trial ("Cannot tell a FAIL trial", a traceback out of
`optimize`): the worker drops the trial in one line, marks its MLflow run INTERRUPTED with
the reason (unless the re-run already took the run over from the checkpoint), keeps the
checkpoint for the re-run, and goes on with the next trial.
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from vaebench import tracking as tk
from vaebench.search import internals
from vaebench.search.attrs import REASON_ATTR, REQUEUED_ATTR
from vaebench.search.closing import Worker, stored

TELL_ERRORS = (ValueError, AssertionError)  # what Optuna's optimize raises when telling a trial finished elsewhere


class TakenOver(BaseException):
    """This worker's trial was finished by another worker. A BaseException on purpose: Optuna's
    `optimize` tells the outcome of any Exception (and KeyboardInterrupt) an objective raises,
    which fails on a finished trial; a BaseException leaves the trial as the other worker left it."""

    def __init__(self, number: int) -> None:
        super().__init__(f"trial {number} was taken over by another worker")
        self.number = number


def check(trial: optuna.Trial) -> None:
    """Raise TakenOver when `trial` is no longer RUNNING in the storage (another worker failed it)."""
    if trial.storage.get_trial(internals.trial_id(trial)).state != TrialState.RUNNING:
        raise TakenOver(trial.number)


def is_taken_over(worker: Worker) -> bool:
    """After Optuna failed to tell this worker's current trial: was it finished by another worker?"""
    current = worker.current
    if current is None:
        return False
    return stored(worker, current.number).state != TrialState.RUNNING


def drop(worker: Worker) -> str:
    """Drop the current trial's result: its MLflow run ends INTERRUPTED with the reason, unless the
    re-run has taken the run over; returns the one line that says so."""
    current = worker.current
    assert current is not None
    trials = worker.study.get_trials(deepcopy=False)
    why = stored(worker, current.number).user_attrs.get(REASON_ATTR) or "no Optuna heartbeat"
    reruns = [t.number for t in trials if t.number > current.number and current.number in
              (t.user_attrs.get(REQUEUED_ATTR), *internals.retry_history(t))]
    again = f"trial {reruns[-1]} runs it again" if reruns else "another worker finished it"
    reason = (f"taken over while this worker was paused: another worker failed it ({why}) and {again}; "
              f"the result of this run is dropped")
    run = current.run
    if run is not None and run.tags().get(tk.TRIAL) == str(current.number):
        run.finish("INTERRUPTED", reason)
    return f"vaebench: trial {current.number} was {reason}"
