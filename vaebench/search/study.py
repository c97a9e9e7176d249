"""Opening a study for a worker: its Optuna study, its MLflow experiment and the one parent
run, then the worker loop."""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from vaebench import checkpoint, manifest, train

from vaebench.tracking import ui as tracking_ui
from vaebench import trial as pipeline
from vaebench import tracking as tk
from vaebench.config import StudySpec
from vaebench.search.attrs import PARENT_ATTR
from vaebench.search import settings
from vaebench.search.consistency import check_before_run, start_fresh
from vaebench.search.space import create_study
from vaebench.search.storage import checkpoint_folder, heartbeat_enabled, open_storage, setup_lock
from vaebench.search.worker import Progress, StudyRun, Worker
from vaebench.tracking import StudyTracker

PARENT_RACE_S = 60  # workers that create the parent run within this window converge on one


def parent_run(spec: StudySpec, study: optuna.Study, tracker: StudyTracker, path: str,
               manifest_doc: dict[str, Any] | None = None) -> str:
    """The study's one parent run, its id kept in the study's user attributes; the worker that
    creates it stores the study file and `manifest_doc` (manifest.json) on it.

    Workers that start at once may each create one (on one machine the setup lock prevents
    it; across machines nothing does): create, then resolve. Every worker keeps the earliest
    recent parent run, the losers delete theirs, so all nest their trials under one run.
    """
    run_id = study.user_attrs.get(PARENT_ATTR)
    if tracker.has_run(run_id):
        return run_id
    mine = tracker.create_parent(
        tags={tk.OBJECTIVE: spec.search.objective, tk.DIRECTION: spec.search.direction,
              tk.STUDY_FILE: path, tk.SAMPLER: spec.search.sampler, tk.NOTE: spec.description,
              tk.DESCRIPTION: spec.description} | tracking_ui.source_tags()
        | ({tk.LITERATURE: spec.literature.to_json()} if spec.literature else {}),
        params={f"search.{k}": v for k, v in spec.search.model_dump(exclude={"space"}).items()}
        | {"search.space": json.dumps(spec.search.model_dump()["space"])},
    )
    winner = tracker.resolve_parent(mine, PARENT_RACE_S)
    stored = study.user_attrs.get(PARENT_ATTR)
    if stored not in (None, run_id, mine) and tracker.has_run(stored):
        winner = stored  # a worker that already settled on its parent run wins
    if winner != mine:
        tracker.delete_run(mine)
    else:
        if path:
            tracker.run(mine).log_artifact(path)
        if manifest_doc is not None:
            tracker.run(mine).log_json(manifest_doc, manifest.FILENAME)
    study.set_user_attr(PARENT_ATTR, winner)
    return winner


def run_study(
    spec: StudySpec, *, storage_url: str, tracking_uri: str, study_path: str = "",
    n_trials: int | None = None, progress: Progress | None = None, data_dir: str | None = None,
    tensorboard_dir: str | None = None, stop: threading.Event | None = None, artifacts_mode: str = "all",
    ckpt_options: checkpoint.Options | None = None, command: Sequence[str] | None = None,
    system_metrics: bool = False, fresh: bool = False,
) -> StudyRun:
    """Run (or resume) the study until it has `n_trials` finished (complete or pruned) trials.

    `ckpt_options` (default: every epoch, in `checkpoint_folder`) says where running trials
    keep their checkpoints; a trial re-run after Ctrl-C, kill -9 or a lost worker goes on from
    its last one, in the same MLflow child run. `artifacts_mode` "all" gives every trial the
    costly artifacts (see vaebench.tracking.artifacts), "best" only the best trial. `system_metrics`: MLflow's
    system metrics on every trial's run. `command` is what
    the manifest records as the command line (default: this process's). `fresh` starts the
    study over (see consistency.start_fresh); without it, stores that disagree about the study
    are refused (consistency). `stop`, once set (the CLI's first Ctrl-C), ends the running
    trial after its epoch as if interrupted, and starts no other; the result then has
    `interrupted` set.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported once, by vaebench
    tk.resolve_tracking_uri(tracking_uri)  # log_model uses the global URI: keep it the study's
    total = n_trials or spec.search.total_trials
    with setup_lock(storage_url, tracking_uri):
        if fresh:
            start_fresh(storage_url, spec.name)
        else:
            check_before_run(spec.name, storage_url, tracking_uri)
        storage = open_storage(storage_url)
        study = create_study(spec, storage)
        settings.record(study, spec, study_path)  # a changed study file is refused, never mixed in
        tracker = StudyTracker.open(tracking_uri, spec.name)
        doc = None
        if not tracker.has_run(study.user_attrs.get(PARENT_ATTR)):  # a new parent run: what reruns and checks it
            fingerprints = pipeline.check_data(spec, Path(study_path or spec.name), data_dir)
            doc = manifest.collect(spec.model_dump(mode="json"), fingerprints, command,
                                   str(train.resolve_device(spec.device)))
        parent_id = parent_run(spec, study, tracker, study_path, doc)
        tracking_ui.describe_experiment(tracker, spec.description)
        tracking_ui.save_view(tracker, spec)
    ckpt_options = ckpt_options or checkpoint.Options(checkpoint_folder(storage_url, spec.name))
    worker = Worker(spec, study, tracker, parent_id, total, progress or Progress(), stop or threading.Event(),
                    data_dir, tensorboard_dir, artifacts_mode, ckpt_options, heartbeat=heartbeat_enabled(storage),
                    system_metrics=system_metrics)
    return worker.run()
