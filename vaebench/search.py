"""Optuna: build (or resume) the study, define the objective, run it.

A trial is: sample values -> TrialConfig -> data.load -> models.build -> train.fit ->
metrics.evaluate, tracked as one MLflow child run. The Optuna objective is a val_ or
train_ metric of the last epoch; test metrics are reported, never optimised.

A study survives failures (README, "Failures and resuming"):

- a trial that raises or diverges is FAIL in Optuna and FAILED in MLflow, with its reason;
  the study goes on;
- Ctrl-C: the running trial stops at the end of its epoch, is FAIL / KILLED (INTERRUPTED),
  and is queued again (same values) for the next run;
- a dead worker (kill -9, power cut): its RUNNING trials are failed and retried once (same
  values) by the next worker that starts or starts a trial. On this host vaebench sees the
  death itself (host, pid and process start time are kept on each trial), which is what a
  journal file needs (it has no heartbeat) and what spares SQLite users Optuna's grace
  period; on other hosts Optuna's heartbeat (RDB storages) does it;
- several workers at once: they converge on one parent run, and each checks before a trial
  that the study still needs it, so together they finish exactly n_trials trials.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import socket
import time
import threading
import traceback
import warnings
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import numpy as np
import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from vaebench import __version__, artifacts, data, metrics, mlflow_view, models, tracking, train
from vaebench.config import Range, StudySpec, TrialConfig, choice_label
from vaebench.errors import DivergenceError, InputError
from vaebench.tracking import (
    DIRECTION, OBJECTIVE, TRIAL, StudyTracker, TensorBoardRun, TrialRun, check_file_location, check_store_url,
    redact, short_reason, sqlite_path,
)

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"  # a trial's child run
WORKER_ATTR = "vaebench.worker"  # {host, pid, start}: the process running the trial
REASON_ATTR = "failure_reason"
REQUEUED_ATTR = "vaebench.requeued_from"  # a queued re-run: the number of the trial it repeats
INTERRUPTED = "interrupted (Ctrl-C)"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 30  # RDB storages: a trial whose worker stops beating for GRACE_S is failed and retried once
GRACE_S = 120
MAX_RETRY = 1  # re-runs of a trial whose worker died (a Ctrl-C re-run does not count)
PARENT_RACE_S = 60  # workers that create the parent run within this window converge on one


def environment() -> dict[str, str]:
    """Versions and host, tagged on every child run (threads as set by --threads)."""
    return {
        "vaebench.version": __version__,
        "vaebench.torch_version": torch.__version__,
        "vaebench.mlflow_version": importlib.metadata.version("mlflow"),
        "vaebench.optuna_version": optuna.__version__,
        "vaebench.python_version": platform.python_version(),
        "vaebench.host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{torch.get_num_threads()} torch threads",
    }


def _trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _PerTrialSeed:
    """Reseeds a sampler's random streams from (study seed, trial number) before each trial.

    Workers of one study share its seed: seeded once, they would all draw the same values.
    Seeded per trial, trial n draws the same values in every run and different ones from
    trial m (TPE still conditions on the trials finished so far).
    """

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)  # type: ignore[call-arg]
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = _trial_seed(self._base_seed, trial.number)
        for holder in (self, getattr(self, "_random_sampler", None)):
            lazy = getattr(holder, "_rng", None)
            if lazy is not None:
                lazy.rng.seed(seed)
        super().before_trial(study, trial)  # type: ignore[misc]


class RandomSampler(_PerTrialSeed, optuna.samplers.RandomSampler):
    pass


class TPESampler(_PerTrialSeed, optuna.samplers.TPESampler):
    pass


class GridSampler(_PerTrialSeed, optuna.samplers.GridSampler):
    """Optuna's GridSampler, but a grid point is free again when its trial failed elsewhere
    (a dead worker, Ctrl-C, a full disk in an earlier run), never when it failed in this
    process (it would fail again), and a queued (WAITING) re-run holds its point."""

    def __init__(self, space: dict[str, Any], seed: int) -> None:
        super().__init__(space, seed=seed)
        self.failed_here: set[int] = set()  # trial numbers that raised or diverged in this process

    def free_points(self, trials: list[FrozenTrial]) -> list[int]:
        """Grid points with no finished, running or queued trial, nor one failed here."""
        taken = set()
        for t in trials:
            if "grid_id" not in t.system_attrs or not self._same_search_space(t.system_attrs.get("search_space", {})):
                continue
            if t.state in (*DONE, TrialState.RUNNING, TrialState.WAITING) or t.number in self.failed_here:
                taken.add(t.system_attrs["grid_id"])
        return sorted(set(range(self._n_min_trials)) - taken)

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        return self.free_points(study._storage.get_all_trials(study._study_id, deepcopy=False))


class AnyPruner(optuna.pruners.BasePruner):
    """Prunes a trial when any of its pruners would: a lenient rule for the first epochs and a
    stricter one once the curves have settled (Optuna has no such combination built in)."""

    def __init__(self, *pruners: optuna.pruners.BasePruner) -> None:
        self.pruners = pruners

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return any(pruner.prune(study, trial) for pruner in self.pruners)


SAMPLERS: dict[str, Callable[[StudySpec], optuna.samplers.BaseSampler]] = {
    "grid": lambda s: GridSampler({k: list(s.search.choices(k)) for k in s.search.space}, seed=s.seed),
    "tpe": lambda s: TPESampler(seed=s.seed),
    "random": lambda s: RandomSampler(seed=s.seed),
}
# Trials report their val metric after every epoch, as step = epoch (1, 2, ...); the first
# trials run whole, so the pruner has curves to compare with. Optuna's median and percentile
# pruners compare a trial's best value so far with the finished (not pruned) trials' values
# at the same epoch.
PRUNERS: dict[str, Callable[[StudySpec], optuna.pruners.BasePruner]] = {
    "none": lambda s: optuna.pruners.NopPruner(),
    # after 5 finished trials, stop one below their median at the same epoch, from epoch 1
    "median": lambda s: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    # after 5 finished trials, stop one outside their best quarter at the same epoch, from
    # epoch 3: later and stricter than `median`, as early curves cross (large learning rates
    # lead after an epoch or two and end behind)
    "percentile": lambda s: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=3),
    # `median`, and from epoch 5 also one outside the finished trials' best third: as lenient
    # as `median` while early curves cross, stricter once they have settled
    "staged": lambda s: AnyPruner(
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        optuna.pruners.PercentilePruner(100 / 3, n_startup_trials=5, n_warmup_steps=5)),
    # successive halving in brackets of 1, 3, 9, ... epochs up to the study's epochs
    "hyperband": lambda s: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=s.train.epochs, reduction_factor=3),
}


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (`*.journal` or `journal:PATH`); None for a database URL."""
    if url.startswith("journal:") or url.endswith(".journal"):
        return Path(url.removeprefix("journal:"))
    return None


def check_storage(url: str) -> None:
    """Refuse a storage that cannot work (a missing folder, a server that does not answer)
    before anything is written; the storage itself is created only when the run starts."""
    what = f"--storage {redact(url)}"
    path = journal_path(url)
    if path is None:
        check_store_url(url, what)
    else:
        check_file_location(path, what)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (`*.journal` or `journal:PATH`) or any SQLAlchemy URL (SQLite, PostgreSQL).

    RDB storages get Optuna's heartbeat, so a trial of a worker killed on another machine is
    failed and retried; dead workers on this machine are found sooner by `Worker.sweep`.
    """
    try:
        path = journal_path(url)
        if path is not None:
            return JournalStorage(JournalFileBackend(str(path)))
        return _rdb_storage(url)
    except Exception as exc:  # noqa: BLE001 - any driver error is a bad --storage
        raise InputError(f"--storage {redact(url)}: cannot open ({short_reason(exc)})") from None


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """RDBStorage, retried when workers starting together race to create its tables."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1 or url.startswith("sqlite"):
                raise
            time.sleep(0.5 * (attempt + 1))  # another worker is creating the schema right now
    raise AssertionError("unreachable")


@contextmanager
def setup_lock(*urls: str) -> Iterator[None]:
    """Hold an exclusive lock on the folders of the local SQLite / journal files in `urls`.

    Two workers starting at once would both create the tables of a new optuna.db or run
    MLflow's migrations on a new mlflow.db ("table ... already exists", "database is
    locked"). flock on the folder itself: no lock file is left behind, and the kernel drops
    the lock when a worker dies. Where flock is missing, it does nothing.
    """
    folders = set()
    for url in urls:
        path = journal_path(url) or sqlite_path(url)
        if path is not None:
            folders.add(str((path.parent if str(path.parent) else Path(".")).resolve()))
    with ExitStack() as stack:
        for folder in sorted(folders):
            stack.enter_context(_folder_lock(folder))
        yield


@contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=SAMPLERS[spec.search.sampler](spec),
        pruner=PRUNERS[spec.search.pruner](spec),
        direction=spec.search.direction,
        load_if_exists=True,
    )


def check_data(spec: StudySpec, path: Path, data_dir: str | None) -> None:
    """Load every dataset the study can use now (it is cached for the trials): missing or
    corrupt files are bad input, reported before anything is written."""
    names = [spec.dataset.name]
    choices = spec.search.space.get("dataset.name")
    if isinstance(choices, list):
        names += [str(c) for c in choices]
    d = spec.dataset
    for name in dict.fromkeys(names):
        try:
            data.load(name, seed=d.seed, binarize=d.binarize, val_fraction=d.val_fraction,
                      test_fraction=d.test_fraction, data_dir=data_dir, download=d.download)
        except (InputError, NameError, AttributeError, TypeError, AssertionError):
            raise  # bad input said already, or a bug: not the files' fault
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises on missing or corrupt files
            raise InputError(f"{path}: dataset.name: {name}: cannot load ({short_reason(exc)})") from None


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Lists are categorical choices (grid points); ranges are float/int distributions."""
    params: dict[str, Any] = {}
    for key, dom in spec.search.space.items():
        if isinstance(dom, Range):
            if dom.type == "int":
                params[key] = trial.suggest_int(key, int(dom.low), int(dom.high), log=dom.log)
            else:
                params[key] = trial.suggest_float(key, dom.low, dom.high, log=dom.log)
        else:
            params[key] = trial.suggest_categorical(key, list(spec.search.choices(key)))
    return spec.search.values(params)


def run_name(number: int, params: dict[str, Any]) -> str:
    """`t007 beta=4 seed=1`: the trial number and its sampled values, short keys."""
    def fmt(k: str, v: Any) -> str:
        if isinstance(v, dict):  # a mapping choice: its keys
            return " ".join(fmt(sub, x) for sub, x in v.items())
        return f"{k.rsplit('.', 1)[-1]}=" + (f"{v:.4g}" if isinstance(v, float) else str(choice_label(v)))

    return " ".join([f"t{number:03d}"] + [fmt(k, v) for k, v in params.items()])


def build_model(cfg: TrialConfig, ds: data.Dataset) -> models.VAEModel:
    """Seeded so that the same config and seed give the same initial weights."""
    torch.manual_seed(cfg.seed)
    m = cfg.model
    return models.build(
        arch=m.arch, objective=m.objective, latent_dim=m.latent_dim, likelihood=m.likelihood,
        input_shape=ds.input_shape, **m.hparams(),
    )


def load_data(cfg: TrialConfig, data_dir: str | None = None) -> data.Dataset:
    d = cfg.dataset
    return data.load(d.name, seed=d.seed, binarize=d.binarize, val_fraction=d.val_fraction,
                     test_fraction=d.test_fraction, data_dir=data_dir)


def train_and_evaluate(
    cfg: TrialConfig, ds: data.Dataset, run: TrialRun, callbacks: list[train.EpochCallback],
    board: TensorBoardRun | None = None, full_artifacts_in: str | None = None,
    dataset: tracking.DatasetRef | None = None, model_name: str = "model",
) -> dict[str, float]:
    """fit + evaluate one config, logging each epoch, the final scores and the per-trial
    artifacts to `run` (and `board`); the full set too when given the experiment to put it in,
    its logged model named `model_name`. The final scores are linked to `dataset`."""
    model = build_model(cfg, ds)
    log_epoch = lambda epoch, m: run.log_metrics({k: v for k, v in m.items() if k != "epoch"}, step=epoch, buffered=True)  # noqa: E731
    loggers = [log_epoch] + ([board.log_epoch] if board else [])
    history = train.fit(
        model, ds, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
        seed=cfg.seed, grad_clip=cfg.train.grad_clip, kl_warmup_epochs=cfg.train.kl_warmup_epochs,
        callbacks=[*loggers, *callbacks], device=cfg.device, eval_batch_size=cfg.eval.batch_size,
    )
    scores = metrics.evaluate(model, ds, split="test", batch_size=cfg.eval.batch_size,
                              seed=cfg.seed, iwae_k=cfg.eval.iwae_k)
    bad = [k for k, v in scores.items() if k.endswith(("_elbo", "_recon", "_kl")) and not math.isfinite(v)]
    if bad:
        raise DivergenceError(f"non-finite {', '.join(bad)} on the test split")
    final = scores | {
        "train_samples_per_s": history.train_samples_per_s,
        "train_seconds": history.train_seconds,
        "n_params": float(model.n_params),
    }
    run.flush()  # the epochs' metrics, then the final scores at step 0
    tracking.log_final_metrics(run.client, run.run_id, final, dataset=dataset)
    if board:
        board.log_epoch(cfg.train.epochs, final)
    artifacts.log_trial(model, ds, run, board, step=cfg.train.epochs)
    if full_artifacts_in is not None:
        artifacts.log_full(model, ds, run, full_artifacts_in, name=model_name, params=cfg.flat())
    return history.last | final


@dataclass
class Progress:
    """What the CLI's progress bar shows; search calls these hooks."""

    on_epoch: Callable[[int, int, int], None] = lambda trial, epoch, epochs: None
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] = lambda s, t: None


@dataclass
class StudyRun:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    finished: int
    total: int
    failures: dict[int, str] = field(default_factory=dict)  # trials that raised or diverged in this run
    retried: list[int] = field(default_factory=list)  # trials of dead workers queued again
    interrupted: bool = False


class Withdrawn(Exception):
    """A trial that another worker made unnecessary; it is failed before it starts."""


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

    A retry after a dead worker counts in Optuna's own `retry_history` (as
    RetryHeartbeatStaleTrialCallback keeps it) and happens at most MAX_RETRY times; a re-run
    after Ctrl-C does not count. Returns whether a copy was queued.
    """
    history = list(trial.system_attrs.get("retry_history", []))
    system = {k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs}
    if retry:
        if len(history) >= MAX_RETRY:
            return False
        history.append(trial.number)
    if history:
        system |= {"failed_trial": trial.system_attrs.get("failed_trial", trial.number), "retry_history": history}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs=system, user_attrs={REQUEUED_ATTR: trial.number},
    ))
    return True


@dataclass
class _Current:
    trial_id: int
    number: int
    run: TrialRun | None = None


class Worker:
    """One `vaebench run` process working on a study, alone or beside others."""

    def __init__(
        self, spec: StudySpec, study: optuna.Study, tracker: StudyTracker, parent_id: str, total: int,
        progress: Progress, stop: threading.Event, data_dir: str | None = None,
        tensorboard_dir: str | None = None, artifacts_mode: str = "all",
    ) -> None:
        self.spec, self.study, self.tracker, self.parent_id, self.total = spec, study, tracker, parent_id, total
        self.progress, self.stop, self.data_dir, self.tensorboard_dir = progress, stop, data_dir, tensorboard_dir
        self.artifacts_mode = artifacts_mode
        self.me = Process.current()
        self.heartbeat = is_heartbeat_enabled(study._storage)
        self.failures: dict[int, str] = {}
        self.retried: list[int] = []
        self.current: _Current | None = None
        self.requeued = False
        self.source_tags = tracking.source_tags()

    # -- dead workers -------------------------------------------------------------------

    def sweep(self) -> None:
        """Fail the RUNNING trials whose worker is dead, queue each again once, and end any
        child run left RUNNING by a trial that is no longer running."""
        if self.heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        now = datetime.now()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = Process.of(trial)
            if worker is None:  # died between Optuna's ask and its first write; RDB: the heartbeat sees it
                age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
                if self.heartbeat or age < GRACE_S:
                    continue
                reason = "worker died (unknown worker)"
            elif worker.is_dead():
                reason = f"worker died ({worker})"
            else:
                continue
            if self._fail(trial, reason) and requeue(self.study, trial, retry=True):
                self.retried.append(trial.number)
        self.close_orphan_runs()

    def _fail(self, trial: FrozenTrial, reason: str) -> bool:
        """Mark a RUNNING trial FAIL with `reason`; False if another worker did it first."""
        storage = self.study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
            return bool(storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
        except UpdateFinishedTrialError:
            return False

    def close_orphan_runs(self) -> None:
        """A child run is RUNNING while its trial is: end the others with the trial's state."""
        runs = self.tracker.running_children(self.parent_id)
        if not runs:
            return
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for run in runs:
            trial = trials.get(int(run.data.tags.get(TRIAL, -1)))
            if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            reason = trial.user_attrs.get(REASON_ATTR) or f"its worker stopped (no Optuna heartbeat for {GRACE_S} s)"
            state = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED"}.get(trial.state, "FAIL")
            if reason == INTERRUPTED:
                state = "INTERRUPTED"
            TrialRun(self.tracker.client, run.info.run_id).finish(state, reason if state != "COMPLETE" else None)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> StudyRun:
        complete = len(self.study.get_trials(deepcopy=False, states=DONE)) >= self.total
        if not complete:
            self.tracker.reopen(self.parent_id)
        interrupted = False
        try:
            self.sweep()
            self.loop()
        except KeyboardInterrupt:
            interrupted = True
            self.on_interrupt()
        interrupted = interrupted or self.stop.is_set()
        if not interrupted:
            self.finish_best()
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state in DONE for t in trials)
        if not complete or self.tracker.client.get_run(self.parent_id).info.status != "FINISHED":
            self.end_parent(trials, done, interrupted)
        return StudyRun(self.study, self.parent_id, self.tracker.experiment_id, self.tracker.client.tracking_uri,
                        done, self.total, self.failures, self.retried, interrupted)

    def loop(self) -> None:
        """New trials while the study needs them: finished + running < total. Each worker
        starts at most as many new trials as were missing when it began, so a study whose
        trials all fail ends; queued re-runs (dead workers, Ctrl-C) come on top."""
        budget = max(self.total - len(self.study.get_trials(deepcopy=False, states=DONE)), 0)
        started = 0
        while not self.stop.is_set():
            trials = self.study.get_trials(deepcopy=False)
            count = Counter(t.state for t in trials)
            if sum(count[s] for s in (*DONE, TrialState.RUNNING)) >= self.total:
                return
            if not count[TrialState.WAITING]:
                if started >= budget:
                    return
                if isinstance(self.study.sampler, GridSampler) and not self.study.sampler.free_points(trials):
                    return
            self.current, self.requeued = None, False
            self.study.optimize(self.objective, n_trials=1, catch=(Exception,),
                                callbacks=[self.progress.on_trial_end], gc_after_trial=False)
            started += not self.requeued
            self.sweep()

    def admit(self, me: FrozenTrial) -> str | None:
        """Why this trial is not needed (None: run it). Trials that started earlier come first:
        finished ones, and running ones that may still finish, fill the study up to its total;
        a grid point is run once."""
        trials = self.study.get_trials(deepcopy=False)
        order = lambda t: (t.datetime_start or datetime.max, t.number)  # noqa: E731
        ahead = [t for t in trials if t.state == TrialState.RUNNING and order(t) < order(me)]
        done = [t for t in trials if t.state in DONE]
        if len(done) + len(ahead) >= self.total:
            return f"the study has its {self.total} trials"
        point = me.system_attrs.get("grid_id")
        if point is not None and any(t.system_attrs.get("grid_id") == point for t in done + ahead):
            return f"grid point {point} is taken"
        return None

    def on_interrupt(self) -> None:
        """Ctrl-C: the trial that was running is FAIL in Optuna, KILLED (INTERRUPTED) in MLflow,
        and queued again with the same values."""
        current = self.current
        if current is None:
            return
        storage = self.study._storage
        trial = storage.get_trial(current.trial_id)
        if trial.state == TrialState.RUNNING:  # a second Ctrl-C came before Optuna recorded the failure
            self._fail(trial, INTERRUPTED)
            trial = storage.get_trial(current.trial_id)
        if trial.state == TrialState.FAIL and trial.user_attrs.get(REASON_ATTR) in (None, INTERRUPTED):
            requeue(self.study, trial, retry=False)  # not a trial that failed on its own, or was not needed
        if current.run and self.tracker.client.get_run(current.run.run_id).info.status == "RUNNING":
            current.run.finish("INTERRUPTED", INTERRUPTED)

    def finish_best(self) -> None:
        """Give the best trial so far the full artifact set (charts, MLflow model), rebuilt
        from its logged weights, unless it has it. Every worker does this as it ends, so
        the last one to end covers the study's final best."""
        try:
            best = self.study.best_trial
        except ValueError:  # no complete trial
            return
        run_id = best.user_attrs.get(RUN_ATTR)
        if not run_id or artifacts.has_full(self.tracker.client, run_id):
            return
        cfg = self.spec.with_params(self.spec.search.values(best.params))
        ds = load_data(cfg, self.data_dir)
        model = artifacts.load_weights(self.tracker.client, run_id, build_model(cfg, ds))
        artifacts.log_full(model, ds, TrialRun(self.tracker.client, run_id), self.tracker.experiment_id,
                           name=tracking.logged_model_name(best.number, self.spec.search.values(best.params)),
                           params=cfg.flat())

    def end_parent(self, trials: list[FrozenTrial], done: int, interrupted: bool) -> None:
        """FINISHED once the study is complete; else, when no other worker is running a trial,
        KILLED after Ctrl-C or FAILED (trials failed; running again retries them)."""
        summary = {"n_trials_done": float(done)}
        if any(t.state == TrialState.COMPLETE for t in trials):
            summary[f"best_{self.spec.search.objective}"] = self.study.best_value
            best_run = self.study.best_trial.user_attrs.get(RUN_ATTR)
            if best_run:
                tracking.summarize_parent(self.tracker.client, self.parent_id, best_run, self.spec.search.objective,
                                          mlflow_view.HEADLINE)
        if done >= self.total:
            self.tracker.end_parent(self.parent_id, "COMPLETE", summary)
        elif not any(t.state == TrialState.RUNNING for t in trials):
            self.tracker.end_parent(self.parent_id, "INTERRUPTED" if interrupted else "INCOMPLETE", summary)

    # -- one trial ----------------------------------------------------------------------

    def objective(self, trial: optuna.Trial) -> float:
        self.current = _Current(trial._trial_id, trial.number)
        trial.set_user_attr(WORKER_ATTR, asdict(self.me) | {"trial": trial.number})
        frozen = self.study._storage.get_trial(trial._trial_id)
        self.requeued = REQUEUED_ATTR in frozen.user_attrs or "failed_trial" in frozen.system_attrs
        why_not = self.admit(frozen)
        if why_not:
            trial.set_user_attr(REASON_ATTR, f"not run: {why_not}")
            raise Withdrawn(why_not)
        try:
            return self.train_trial(trial)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.failures[trial.number] = reason
            if isinstance(self.study.sampler, GridSampler):
                self.study.sampler.failed_here.add(trial.number)
            trial.set_user_attr(REASON_ATTR, reason)
            if self.current.run:
                self.current.run.finish("FAIL", reason + "\n" + traceback.format_exc(limit=5))
            raise

    def train_trial(self, trial: optuna.Trial) -> float:
        """Sample, train, evaluate and track one trial; its child run ends PRUNED, INTERRUPTED
        or COMPLETE here (FAIL in `objective`)."""
        spec = self.spec
        params = suggest(trial, spec)
        cfg = spec.with_params(params)
        ds = load_data(cfg, self.data_dir)
        name = run_name(trial.number, params)
        run = self.tracker.start_trial(self.parent_id, trial.number, name, environment() | {
            "vaebench.dataset_fingerprint": ds.fingerprint,
            "vaebench.device": str(train.resolve_device(cfg.device)),
            "vaebench.seed": cfg.seed,
            "vaebench.optuna_trial_id": trial._trial_id,
            tracking.RUN_COLOR: mlflow_view.run_color(spec, params),
        } | self.source_tags)
        assert self.current is not None
        self.current.run = run
        run.log_params(cfg.flat())
        dataset = tracking.log_dataset(self.tracker.client, run.run_id, ds.name, ds.fingerprint,
                                       self.data_dir or f"vaebench.data:{ds.name}",
                                       {s: tuple(getattr(ds, s).x.shape) for s in data.SPLITS})
        trial.set_user_attr(RUN_ATTR, run.run_id)
        objective_key = spec.search.objective

        def report(epoch: int, m: dict[str, float]) -> None:
            self.progress.on_epoch(trial.number, epoch, cfg.train.epochs)
            if self.stop.is_set():
                raise KeyboardInterrupt
            trial.report(m[objective_key], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        board = TensorBoardRun(Path(self.tensorboard_dir) / spec.name / name) if self.tensorboard_dir else None
        try:
            full = self.tracker.experiment_id if self.artifacts_mode == "all" else None
            final = train_and_evaluate(cfg, ds, run, [report], board, full, dataset,
                                       tracking.logged_model_name(trial.number, params))
        except optuna.TrialPruned as exc:
            run.finish("PRUNED", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(REASON_ATTR, INTERRUPTED)
            run.finish("INTERRUPTED", INTERRUPTED)
            raise
        finally:
            if board:
                board.close()
        tracking.describe_run(self.tracker.client, run.run_id,
                              tracking.trial_summary(name, objective_key, final, mlflow_view.HEADLINE))
        run.finish("COMPLETE")
        return final[objective_key]


def parent_run(spec: StudySpec, study: optuna.Study, tracker: StudyTracker, path: str) -> str:
    """The study's one parent run, its id kept in the study's user attributes.

    Workers that start at once may each create one (on one machine the setup lock prevents
    it; across machines nothing does): create, then resolve. Every worker keeps the earliest
    recent parent run, the losers delete theirs, so all nest their trials under one run.
    """
    run_id = study.user_attrs.get(PARENT_ATTR)
    if tracker.has_run(run_id):
        return run_id
    mine = tracker.create_parent(
        tags={OBJECTIVE: spec.search.objective, DIRECTION: spec.search.direction,
              "vaebench.study_file": path, "vaebench.sampler": spec.search.sampler,
              "mlflow.note.content": spec.description, tracking.DESCRIPTION: spec.description}
        | tracking.source_tags(),
        params={f"search.{k}": v for k, v in spec.search.model_dump(exclude={"space"}).items()}
        | {"search.space": json.dumps(spec.search.model_dump()["space"])},
    )
    winner = tracker.resolve_parent(mine, PARENT_RACE_S)
    stored = study.user_attrs.get(PARENT_ATTR)
    if stored not in (None, run_id, mine) and tracker.has_run(stored):
        winner = stored  # a worker that already settled on its parent run wins
    if winner != mine:
        tracker.client.delete_run(mine)
    elif path:
        tracker.client.log_artifact(mine, path)
    study.set_user_attr(PARENT_ATTR, winner)
    return winner


def run_study(
    spec: StudySpec, *, storage_url: str, tracking_uri: str, study_path: str = "",
    n_trials: int | None = None, progress: Progress | None = None, data_dir: str | None = None,
    tensorboard_dir: str | None = None, stop: threading.Event | None = None, artifacts_mode: str = "all",
) -> StudyRun:
    """Run (or resume) the study until it has `n_trials` finished (complete or pruned) trials.

    `artifacts_mode` "all" gives every trial the costly artifacts (see vaebench.artifacts),
    "best" only the best trial. `stop`, once set (the CLI's first Ctrl-C), ends the running trial after its epoch as if
    interrupted, and starts no other; the result then has `interrupted` set.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported once, by vaebench
    mlflow.set_tracking_uri(tracking_uri)  # log_model uses the global URI: keep it the study's
    total = n_trials or spec.search.total_trials
    with setup_lock(storage_url, tracking_uri):
        study = create_study(spec, open_storage(storage_url))
        tracker = StudyTracker.open(tracking_uri, spec.name)
        parent_id = parent_run(spec, study, tracker, study_path)
        tracking.describe_experiment(tracker.client, tracker.experiment_id, spec.description)
        tracking.save_view(tracker.client, tracker.experiment_id, spec)
    worker = Worker(spec, study, tracker, parent_id, total, progress or Progress(), stop or threading.Event(),
                    data_dir, tensorboard_dir, artifacts_mode)
    return worker.run()
