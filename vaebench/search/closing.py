"""How a worker closes its runs when it stops: after Ctrl-C, after a store failed mid-study
(a full disk, a lost server), and at the end (the parent run's final state).

Closing runs inside `interrupt` closing mode: a further Ctrl-C waits for it.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from vaebench.errors import StoreFailure
from vaebench.search import recovery
from vaebench.tracking import ui as tracking_ui
from vaebench.search.attrs import INTERRUPTED, REASON_ATTR, RUN_ATTR
from vaebench.stores import short_reason

if TYPE_CHECKING:
    from vaebench.config import StudySpec
    from vaebench.tracking import TrialRun

# What a store raises when it cannot be written (a full disk, a lost server or file).
STORE_ERRORS = (OSError, SQLAlchemyError, sqlite3.Error, MlflowException, optuna.exceptions.StorageInternalError)
# What a store says when another process held its lock past the timeout (SQLite, PostgreSQL)
LOCK_WAITS = ("database is locked", "database table is locked", "lock timeout", "could not obtain lock")
RESUME = "free the space or bring the store back, then run the same command again to resume"
LOCKED = ("another process kept it locked (a paused or stuck worker? `kill -CONT` it, or let it end), "
          "then run the same command again to go on")


class Worker(Protocol):
    """What closing needs of a worker (search.worker.Worker fulfils it); a protocol, so that
    this module does not import the worker that imports it."""

    study: optuna.Study
    tracker: Any  # tracking.StudyTracker
    parent_id: str
    spec: StudySpec
    total: int
    current: Any  # the trial being run, or None


def store_error(exc: BaseException) -> BaseException | None:
    """The store's error behind `exc`, if any: Optuna, when it cannot record a trial's end,
    raises an AssertionError of its own while handling the store's error (its __context__)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, STORE_ERRORS):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def lock_wait(cause: BaseException) -> bool:
    """The store was not broken but locked by another process past the wait: no full disk, and
    the runs it shares with that process are theirs to close."""
    return any(text in str(cause).lower() for text in LOCK_WAITS)


def as_store_failure(exc: BaseException) -> StoreFailure | None:
    """A store's error met outside a trial (opening the study, reopening the parent run): the
    one line to show, or None when `exc` is not a store's."""
    cause = store_error(exc)
    if cause is None:
        return None
    return StoreFailure(f"cannot write to the stores ({type(cause).__name__}: {short_reason(cause)}); "
                        f"{LOCKED if lock_wait(cause) else RESUME}")


def stored(worker: Worker, number: int) -> FrozenTrial:
    """Trial `number` as stored now."""
    return next(t for t in worker.study.get_trials(deepcopy=False) if t.number == number)


def close_interrupted(worker: Worker) -> None:
    """Ctrl-C: the trial that was running is FAIL in Optuna, KILLED (INTERRUPTED) in MLflow,
    and queued again with the same values."""
    current = worker.current
    if current is None:
        return
    trial = stored(worker, current.number)
    if trial.state == TrialState.RUNNING:  # a second Ctrl-C came before Optuna recorded the failure
        recovery.fail(worker.study, trial, INTERRUPTED)
        trial = stored(worker, current.number)
    if trial.state == TrialState.FAIL and trial.user_attrs.get(REASON_ATTR) in (None, INTERRUPTED):
        recovery.requeue(worker.study, trial, retry=False)  # not a trial that failed on its own, or was not needed
    if current.run and current.run.status() == "RUNNING":
        current.run.finish("INTERRUPTED", INTERRUPTED)


def close_after_store_failure(worker: Worker, exc: BaseException) -> StoreFailure:
    """A store failed: fail the running trial (Optuna) and its run (MLflow), end the parent run
    INCOMPLETE, each as far as its store still takes writes; what cannot be written now is
    closed by the next run (dead-worker recovery). Returns the one line to show.

    A store locked by another process (a paused worker holding SQLite's lock) is left alone:
    each write would wait out the lock again, and the parent run is shared with that worker;
    once this one has exited, the others' dead-worker recovery closes its trial."""
    reason = f"{type(exc).__name__}: {short_reason(exc)}"
    if lock_wait(exc):
        return StoreFailure(f"a store stayed locked mid-study ({reason}); this worker stopped, its runs left for "
                            f"the others or the next run; {LOCKED}")
    left = []
    current = worker.current
    steps = []
    if current is not None:
        steps += [("its Optuna trial", lambda: _fail_trial(worker, current.number, reason)),
                  ("its MLflow run", lambda: _fail_run(current.run, reason))]
    steps.append(("the parent run", lambda: worker.tracker.end_parent(worker.parent_id, "INCOMPLETE", {})))
    for what, step in steps:
        try:
            step()
        except STORE_ERRORS:
            left.append(what)
    trial = f"trial {current.number} failed, " if current is not None else ""
    closed = f"{', '.join(left)} left for the next run to close" if left else "its runs closed"
    return StoreFailure(f"a store failed mid-study ({reason}); {trial}{closed}; {RESUME}")


def _fail_trial(worker: Worker, number: int, reason: str) -> None:
    trial = stored(worker, number)
    if trial.state == TrialState.RUNNING:
        recovery.fail(worker.study, trial, reason)


def _fail_run(run: TrialRun | None, reason: str) -> None:
    if run is not None and run.status() == "RUNNING":
        run.finish("FAIL", reason)


def end_parent(worker: Worker, trials: list[FrozenTrial], done: int, interrupted: bool) -> None:
    """COMPLETE once the study is complete; else, when no other worker is running a trial,
    INTERRUPTED after Ctrl-C or INCOMPLETE (trials failed; running again retries them)."""
    summary = {"n_trials_done": float(done)}
    if any(t.state == TrialState.COMPLETE for t in trials):
        summary[f"best_{worker.spec.search.objective}"] = worker.study.best_value
        best_run = worker.study.best_trial.user_attrs.get(RUN_ATTR)
        if best_run:
            tracking_ui.summarize_parent(worker.tracker.run(worker.parent_id), best_run, worker.spec.search.objective)
    if done >= worker.total:
        worker.tracker.end_parent(worker.parent_id, "COMPLETE", summary)
    elif not any(t.state == TrialState.RUNNING for t in trials):
        worker.tracker.end_parent(worker.parent_id, "INTERRUPTED" if interrupted else "INCOMPLETE", summary)


@contextmanager
def store_failures_in_one_line() -> Iterator[None]:
    """A store's error outside a trial (a full disk as the study opens) as one line."""
    try:
        yield
    except StoreFailure:
        raise
    except Exception as exc:
        failure = as_store_failure(exc)
        if failure is None:
            raise
        raise failure from exc
