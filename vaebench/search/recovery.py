"""Dead workers: finding the trials whose process died, failing them, queueing each again
once, and closing the MLflow runs they left RUNNING.

On this host vaebench sees a death itself (host, pid and process start time are kept on each
trial), which is what a journal file needs (it has no heartbeat) and what spares SQLite users
Optuna's grace period; on other hosts Optuna's heartbeat (RDB storages) does it.
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from vaebench.search import internals
from vaebench.search.attrs import CHECKPOINT_ATTR, INTERRUPTED, RESUMED_ATTR, REASON_ATTR, REQUEUED_ATTR, WORKER_ATTR
from vaebench.search.storage import GRACE_S, MAX_RETRY
from vaebench.tracking import TRIAL, StudyTracker


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return fields[0], fields[19]


@dataclass(frozen=True)
class Process:
    """A worker process, recorded on each of its trials: host, pid and the start time the
    kernel gives it (so a recycled pid is not taken for the worker)."""

    host: str
    pid: int
    start: str = ""

    @classmethod
    def current(cls) -> Process:
        stat = _proc_stat(os.getpid())
        return cls(socket.gethostname(), os.getpid(), stat[1] if stat else "")

    @classmethod
    def of(cls, trial: FrozenTrial) -> Process | None:
        """The worker recorded on `trial`; None if none yet (or only one copied from the trial
        it re-runs: Optuna's heartbeat retry copies user attributes)."""
        attr = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(attr, dict) or attr.get("trial") != trial.number:
            return None
        return cls(str(attr.get("host")), int(attr.get("pid", -1)), str(attr.get("start", "")))

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}"

    def is_dead(self) -> bool:
        """True only when it is sure: same host, and the pid is gone, a zombie, or reused."""
        if self.host != socket.gethostname():
            return False
        stat = _proc_stat(self.pid)
        if stat is None:  # no /proc (macOS), or hidden: a signal 0 tells whether the pid exists
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except OSError:  # another user's process
                return False
            return False
        state, start = stat
        return state in ("Z", "X") or (bool(self.start) and start != self.start)


def requeue(study: optuna.Study, trial: FrozenTrial, *, retry: bool) -> bool:
    """Queue a WAITING copy of `trial`: same values, same grid point, run by the next worker.

    A retry after a dead worker (that had made no progress, see `made_progress`) counts in Optuna's own retry history (as
    RetryHeartbeatStaleTrialCallback keeps it) and happens at most MAX_RETRY times; a re-run
    after Ctrl-C does not count. Returns whether a copy was queued.
    """
    return internals.queue_copy(study, trial, {REQUEUED_ATTR: trial.number}, max_retry=MAX_RETRY if retry else None)


def made_progress(trial: FrozenTrial) -> bool:
    """A trial that checkpointed past the epoch it started from: a worker killed again and
    again (spot instances, wall-clock limits) still gets its long trial done, one stretch at a
    time, while a trial that kills its worker before any progress is retried only MAX_RETRY times."""
    return int(trial.user_attrs.get(CHECKPOINT_ATTR, 0)) > int(trial.user_attrs.get(RESUMED_ATTR, 1))


def fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with `reason`; False if another worker did it first."""
    return internals.fail(study, trial, REASON_ATTR, reason)


def sweep(study: optuna.Study, heartbeat: bool) -> list[int]:
    """Fail the RUNNING trials whose worker is dead and queue each again once; returns the
    numbers of the trials queued again. `heartbeat`: the storage has Optuna's heartbeat, which
    also fails (and retries) trials of dead workers on other hosts."""
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    retried = []
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = Process.of(trial)
        if worker is None:  # died between Optuna's ask and its first write; RDB: the heartbeat sees it
            age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            if heartbeat or age < GRACE_S:
                continue
            reason = "worker died (unknown worker)"
        elif worker.is_dead():
            reason = f"worker died ({worker})"
        else:
            continue
        if fail(study, trial, reason) and requeue(study, trial, retry=not made_progress(trial)):
            retried.append(trial.number)
    return retried


def close_orphan_runs(study: optuna.Study, tracker: StudyTracker, parent_id: str) -> None:
    """A child run is RUNNING while its trial is: end the others with the trial's state."""
    runs = tracker.running_children(parent_id)
    if not runs:
        return
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in runs:
        trial = trials.get(int(run.data.tags.get(TRIAL, -1)))
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        reason = trial.user_attrs.get(REASON_ATTR) or f"its worker stopped (no Optuna heartbeat for {GRACE_S} s)"
        state = "INTERRUPTED" if reason == INTERRUPTED else trial.state.name  # COMPLETE, PRUNED or FAIL
        tracker.run(run.info.run_id).finish(state, reason if state != "COMPLETE" else None)
