"""Optuna: the search over a study's space, run by one or many workers.

A trial is: sample values (space) -> vaebench.trial (data, model, fit, evaluate, one MLflow
child run) -> its objective value back to Optuna. The objective is a val_ or train_ metric of
the last epoch; test metrics are reported, never optimised. A study survives failed trials,
Ctrl-C, dead workers and workers side by side (worker, recovery).

    space      samplers and pruners (registries), sampling one trial's values
    storage    opening a journal file or database; the lock for creating local stores;
               where running trials keep their checkpoints
    settings   the settings a study's trials run with: recorded, and a changed study file refused
    consistency  the Optuna storage and the MLflow store agree on a study before a run or
               a report (one of them deleted or emptied is refused, saying what to do)
    closing    closing the runs after Ctrl-C, after a store failed, and at the end
    recovery   dead workers: fail their trials, queue them again, close their runs
    takeover   a paused worker whose trial another worker took over: drop it in one line, go on
    worker     the loop of one `vaebench run` process
    study      the study, its experiment and parent run, then the loop (run_study)
    attrs      the names of vaebench's Optuna attributes
    internals  every use of Optuna's private names, each with its reason
"""
from vaebench.search.attrs import PARENT_ATTR, REASON_ATTR, RUN_ATTR, SETTINGS_ATTR, WORKER_ATTR
from vaebench.search.closing import as_store_failure, store_failures_in_one_line
from vaebench.search.consistency import check_before_run, check_tracked, start_fresh
from vaebench.search.recovery import Process, requeue
from vaebench.search.settings import check_settings
from vaebench.search.space import PRUNERS, SAMPLERS, AnyPruner, GridSampler, create_study, suggest
from vaebench.search.storage import check_storage, checkpoint_folder, heartbeat_enabled, journal_path, open_storage, setup_lock
from vaebench.search.study import parent_run, run_study
from vaebench.search.worker import Progress, StudyRun, Worker, Withdrawn

__all__ = [
    "PARENT_ATTR", "PRUNERS", "REASON_ATTR", "RUN_ATTR", "SAMPLERS", "SETTINGS_ATTR", "WORKER_ATTR", "AnyPruner", "GridSampler",
    "as_store_failure", "check_before_run", "check_settings", "store_failures_in_one_line", "check_tracked", "start_fresh",
    "Process", "Progress", "StudyRun", "Withdrawn", "Worker", "check_storage", "checkpoint_folder", "create_study",
    "heartbeat_enabled", "journal_path", "open_storage", "parent_run", "requeue", "run_study", "setup_lock",
    "suggest",
]
