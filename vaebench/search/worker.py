"""The worker loop: one `vaebench run` process working on a study, alone or beside others.

- a trial that raises or diverges is FAIL in Optuna and FAILED in MLflow, with its reason;
  the study goes on;
- Ctrl-C: the running trial stops at the end of its epoch, is FAIL / KILLED (INTERRUPTED),
  and is queued again (same values) for the next run;
- a dead worker: see `recovery`; its trials are failed and retried once;
- several workers at once: they converge on one parent run, and each checks before a trial
  that the study still needs it, so together they finish exactly n_trials trials.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from vaebench import checkpoint, train

from vaebench.tracking import artifacts

from vaebench.search import interrupt

from vaebench.tracking import view as mlflow_view

from vaebench.tracking import ui as tracking_ui
from vaebench import tracking as tk
from vaebench import trial as pipeline
from vaebench.config import StudySpec
from vaebench.errors import DivergenceError
from vaebench.search import closing, internals, recovery, takeover
from vaebench.search.attrs import CHECKPOINT_ATTR, DONE, INTERRUPTED, RESUMED_ATTR, REASON_ATTR, REQUEUED_ATTR, RUN_ATTR, WORKER_ATTR
from vaebench.search.space import GridSampler, suggest
from vaebench.tracking.tensorboard import TensorBoardRun
from vaebench.tracking import StudyTracker, TrialRun


@dataclass
class Progress:
    """What the CLI's progress bar shows; search calls these hooks."""

    on_epoch: Callable[[int, int, int], None] = lambda trial, epoch, epochs: None
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] = lambda s, t: None
    on_note: Callable[[str], None] = lambda line: print(line, file=sys.stderr)  # one line for the user


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
    untracked: list[int] = field(default_factory=list)  # failed trials with no MLflow run (reason in Optuna only)


class Withdrawn(Exception):
    """A trial that another worker made unnecessary; it is failed before it starts."""


@dataclass
class _Current:
    number: int
    run: TrialRun | None = None


class Worker:
    """One `vaebench run` process working on a study, alone or beside others. `heartbeat`: the
    study's storage has Optuna's heartbeat (storage.heartbeat_enabled)."""

    def __init__(
        self, spec: StudySpec, study: optuna.Study, tracker: StudyTracker, parent_id: str, total: int,
        progress: Progress, stop: threading.Event, data_dir: str | None = None,
        tensorboard_dir: str | None = None, artifacts_mode: str = "all",
        ckpt_options: checkpoint.Options | None = None, *, heartbeat: bool = False, system_metrics: bool = False,
    ) -> None:
        self.spec, self.study, self.tracker, self.parent_id, self.total = spec, study, tracker, parent_id, total
        self.ckpt_options = ckpt_options
        self.progress, self.stop, self.data_dir, self.tensorboard_dir = progress, stop, data_dir, tensorboard_dir
        self.artifacts_mode = artifacts_mode
        self.system_metrics = system_metrics
        self.me = recovery.Process.current()
        self.heartbeat = heartbeat
        self.failures: dict[int, str] = {}
        self.untracked: list[int] = []
        self.retried: list[int] = []
        self.current: _Current | None = None
        self.requeued = False
        self.source_tags = tracking_ui.source_tags()

    def sweep(self) -> None:
        """Fail and queue again the trials of dead workers; end child runs left RUNNING."""
        self.retried += recovery.sweep(self.study, self.heartbeat)
        recovery.close_orphan_runs(self.study, self.tracker, self.parent_id)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> StudyRun:
        """Work until the study is complete, no trial is left to start, or Ctrl-C; then close
        the runs (see `closing`). `interrupted` in the result: stopped with trials left to run."""
        complete = len(self.study.get_trials(deepcopy=False, states=DONE)) >= self.total
        if not complete:
            self.tracker.reopen(self.parent_id)
        with interrupt.scope():
            interrupted = False
            try:
                self.sweep()
                self.loop()
            except KeyboardInterrupt:
                interrupted = True
                interrupt.begin_closing()
                closing.close_interrupted(self)
            except Exception as exc:
                cause = closing.store_error(exc)
                if cause is None:
                    raise
                interrupt.begin_closing()
                raise closing.close_after_store_failure(self, cause) from exc
            interrupt.begin_closing()
            trials = self.study.get_trials(deepcopy=False)
            done = sum(t.state in DONE for t in trials)
            interrupted = (interrupted or self.stop.is_set()) and done < self.total
            if not interrupted:
                self.finish_best()
            if not complete or self.tracker.run(self.parent_id).status() != "FINISHED":
                closing.end_parent(self, trials, done, interrupted)
        return StudyRun(self.study, self.parent_id, self.tracker.experiment_id, self.tracker.tracking_uri,
                        done, self.total, self.failures, self.retried, interrupted, self.untracked)

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
            try:
                self.study.optimize(self.objective, n_trials=1, catch=(Exception,),
                                    callbacks=[self.progress.on_trial_end], gc_after_trial=False)
            except takeover.TakenOver:
                self.progress.on_note(takeover.drop(self))
            except takeover.TELL_ERRORS:
                if not takeover.is_taken_over(self):  # taken over after the objective's last look
                    raise
                self.progress.on_note(takeover.drop(self))
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
        point = internals.grid_point(me)
        if point is not None and any(internals.grid_point(t) == point for t in done + ahead):
            return f"grid point {point} is taken"
        return None

    def finish_best(self) -> None:
        """Give the best trial so far its standalone `pt2` model (replacing its light one) and,
        where it lacks them (`--artifacts best`), the charts, rebuilt from its logged weights.
        Every worker does this as it ends, so the last one to end covers the study's final best."""
        try:
            best = self.study.best_trial
        except ValueError:  # no complete trial
            return
        run_id = best.user_attrs.get(RUN_ATTR)
        if not run_id:
            return
        run = self.tracker.run(run_id)
        if artifacts.has_full(run, standalone=True):
            return
        charts = not artifacts.has_full(run)  # read before the standalone model sets the run's model tags
        cfg = self.spec.with_params(self.spec.search.values(best.params))
        ds = pipeline.load_data(cfg, self.data_dir)
        model = artifacts.load_weights(run, pipeline.build_model(cfg, ds))
        name = tracking_ui.logged_model_name(best.number, self.spec.search.values(best.params))
        artifacts.log_full(model, ds, run, self.tracker.experiment_id, name, cfg.flat(),
                           step=cfg.train.epochs, standalone=True, charts=charts)

    # -- one trial ----------------------------------------------------------------------

    def objective(self, trial: optuna.Trial) -> float:
        self.current = _Current(trial.number)
        trial.set_user_attr(WORKER_ATTR, asdict(self.me) | {"trial": trial.number})
        frozen = closing.stored(self, trial.number)
        self.requeued = REQUEUED_ATTR in frozen.user_attrs or internals.retried_trial_number(frozen) is not None
        why_not = self.admit(frozen)
        if why_not:
            trial.set_user_attr(REASON_ATTR, f"not run: {why_not}")
            raise Withdrawn(why_not)
        try:
            return self.train_trial(trial)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except UpdateFinishedTrialError:  # writing to a trial another worker failed meanwhile
            raise takeover.TakenOver(trial.number) from None
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.failures[trial.number] = reason
            if isinstance(self.study.sampler, GridSampler):
                self.study.sampler.failed_here.add(trial.number)
            trial.set_user_attr(REASON_ATTR, reason)
            if self.current.run:
                self.current.run.finish("FAIL", reason + "\n" + traceback.format_exc(limit=5))
            else:
                self.untracked.append(trial.number)
            raise

    def train_trial(self, trial: optuna.Trial) -> float:
        """Sample, train, evaluate and track one trial; its child run ends PRUNED, INTERRUPTED
        or COMPLETE here (FAIL in `objective`)."""
        spec = self.spec
        params = suggest(trial, spec)
        cfg = spec.with_params(params)
        ds = pipeline.load_data(cfg, self.data_dir)
        name = pipeline.run_name(trial.number, params)
        tags = pipeline.environment() | {
            tk.DATASET_FINGERPRINT: ds.fingerprint,
            tk.DEVICE: str(train.resolve_device(cfg.device)),
            tk.SEED: cfg.seed,
            tk.OPTUNA_TRIAL_ID: internals.trial_id(trial),
            tk.RUN_COLOR: mlflow_view.run_color(spec, params),
        } | self.source_tags
        ckpt, resume, run = None, None, None
        if self.ckpt_options is not None:
            ckpt = checkpoint.TrialCheckpoint(self.ckpt_options.folder, checkpoint.identity(cfg.flat(), ds.fingerprint))
            resume = ckpt.load()  # a damaged or foreign file fails the trial, in one line
            if resume is not None:
                earlier = ckpt.info_of_saved().get("run_id")
                run = self.tracker.resume_trial(earlier, trial.number, tags | {tk.RESUMED_AT_EPOCH: resume["epoch"]})
        if run is None:
            run = self.tracker.start_trial(self.parent_id, trial.number, name, tags)
            run.log_params(cfg.flat())
        if ckpt is not None:
            ckpt.info = {"run_id": run.run_id, "study": spec.name}
            ckpt.after_save = lambda state: trial.set_user_attr(CHECKPOINT_ATTR, int(state["epoch"]))
            if resume is not None:
                trial.set_user_attr(RESUMED_ATTR, int(resume["epoch"]))
        assert self.current is not None
        self.current.run = run
        trial.set_user_attr(RUN_ATTR, run.run_id)
        tracking_ui.log_dataset(run, ds, self.data_dir or f"vaebench.data:{ds.name}")
        objective_key = spec.search.objective
        for past in (resume or {}).get("history", {}).get("epochs", []):  # the pruner sees the whole curve
            trial.report(past[objective_key], int(past["epoch"]))

        def report(epoch: int, m: dict[str, float]) -> None:
            self.progress.on_epoch(trial.number, epoch, cfg.train.epochs)
            if self.stop.is_set():
                interrupt.begin_closing()
                raise KeyboardInterrupt
            takeover.check(trial)  # this worker was paused, and another took the trial over
            trial.report(m[objective_key], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        board = TensorBoardRun(Path(self.tensorboard_dir) / spec.name / name) if self.tensorboard_dir else None
        try:
            full = self.tracker.experiment_id if self.artifacts_mode == "all" else None
            with tracking_ui.system_metrics(run) if self.system_metrics else contextlib.nullcontext():
                final = pipeline.train_and_evaluate(cfg, ds, run, [report], board, full, ckpt, self.ckpt_options,
                                                    resume, tracking_ui.logged_model_name(trial.number, params))
        except optuna.TrialPruned as exc:
            run.finish("PRUNED", str(exc))
            self.drop_checkpoint(ckpt)
            raise
        except KeyboardInterrupt:
            interrupt.begin_closing()  # a second Ctrl-C stopped the epoch: closing from here
            trial.set_user_attr(REASON_ATTR, INTERRUPTED)
            run.finish("INTERRUPTED", INTERRUPTED)
            raise
        except DivergenceError:
            self.drop_checkpoint(ckpt)  # it would diverge again from there; other failures keep it
            raise
        finally:
            if board:
                board.close()
        takeover.check(trial)  # before the run is marked COMPLETE: the re-run's result counts
        tracking_ui.describe_run(run, tracking_ui.trial_summary(name, objective_key, final))
        run.finish("COMPLETE")
        self.drop_checkpoint(ckpt)
        return final[objective_key]

    def drop_checkpoint(self, ckpt: checkpoint.TrialCheckpoint | None) -> None:
        if ckpt is not None and self.ckpt_options is not None and not self.ckpt_options.keep:
            ckpt.remove()
