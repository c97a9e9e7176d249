"""MLflow: one experiment per study, one parent run per study, one child run per trial.

Everything goes through MlflowClient with explicit run ids: MLflow's fluent active-run
stack is per thread, so `nested=True` alone breaks under threads and worker processes. A
child run is linked to its parent by the `mlflow.parentRunId` tag, which is exactly what
`mlflow.start_run(parent_run_id=...)` sets. Each epoch's metrics go in one log_batch call.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

# Tag names: the report reads only these (and params/metrics) back.
STUDY = "vaebench.study"
ROLE = "vaebench.role"  # "study" on the parent, "trial" on children
TRIAL = "vaebench.trial_number"
STATE = "vaebench.state"  # COMPLETE / PRUNED / FAIL / INTERRUPTED
REASON = "vaebench.failure_reason"
OBJECTIVE = "vaebench.objective"
DIRECTION = "vaebench.direction"
PARENT = "mlflow.parentRunId"

# How a trial's end maps onto MLflow's run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "INTERRUPTED": "KILLED"}
_MAX_BATCH = 100  # MLflow's limit of params per log_batch call


def quiet() -> None:
    """Keep MLflow's and its migrations' INFO chatter and download bars out of the progress bar."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default (./mlflow.db)."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """A metric that could not be computed is left out (shown empty), never logged as 0 or NaN."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


@dataclass
class TrialRun:
    """One trial's child run."""

    client: MlflowClient
    run_id: str

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        ts = _now_ms()
        batch = [Metric(k, v, ts, step) for k, v in _finite(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, state: str, reason: str | None = None) -> None:
        tags = {STATE: state} | ({REASON: reason[:4000]} if reason else {})
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=RUN_STATUS[state])


@dataclass
class StudyTracker:
    """The study's experiment; creates the parent run and the trials' child runs."""

    client: MlflowClient
    experiment_id: str
    study: str

    @classmethod
    def open(cls, tracking_uri: str, study: str) -> StudyTracker:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            try:
                return cls(client, client.create_experiment(study), study)
            except MlflowException:  # another worker created it first
                experiment = client.get_experiment_by_name(study)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return cls(client, experiment.experiment_id, study)

    def has_run(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False

    def create_parent(self, tags: dict[str, Any], params: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={STUDY: self.study, ROLE: "study"} | {k: str(v) for k, v in tags.items()},
        )
        TrialRun(self.client, run.info.run_id).log_params(params)
        return run.info.run_id

    def finish_parent(self, run_id: str, summary: dict[str, float]) -> None:
        TrialRun(self.client, run_id).log_metrics(summary)
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

    def start_trial(self, parent_id: str, number: int, name: str, tags: dict[str, Any]) -> TrialRun:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={STUDY: self.study, ROLE: "trial", TRIAL: str(number), PARENT: parent_id}
            | {k: str(v) for k, v in tags.items()},
        )
        return TrialRun(self.client, run.info.run_id)


class TensorBoardRun:
    """The same per-epoch scalars and pictures as MLflow, as TensorBoard event files."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in _finite(metrics).items():
            if name != "epoch":
                self.writer.add_scalar(name, value, epoch)

    def log_picture(self, path: Path, step: int) -> None:
        from torchvision.io import ImageReadMode, read_image

        self.writer.add_image(path.stem, read_image(str(path), ImageReadMode.RGB), step)

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
