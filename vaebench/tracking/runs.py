"""MLflow: one experiment per study, one parent run per study, one child run per trial.

The only module that writes to MLflow: it owns every tag name and the one map from a
vaebench state to MLflow's run status; search, artifacts and report go through it.

Everything goes through MlflowClient with explicit run ids: MLflow's fluent active-run
stack is per thread, so `nested=True` alone breaks under threads and worker processes. A
child run is linked to its parent by the `mlflow.parentRunId` tag, which is exactly what
`mlflow.start_run(parent_run_id=...)` sets. Each epoch's metrics go in one log_batch call.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from vaebench.errors import InputError
from vaebench.stores import check_store_url, redact, short_reason, sqlite_path

# Tag names: every tag vaebench writes; the report reads only these (and params/metrics) back.
PREFIX = "vaebench."  # the report copies every tag under it into its trial table
STUDY = "vaebench.study"
ROLE = "vaebench.role"  # "study" on the parent, "trial" on children
TRIAL = "vaebench.trial_number"
STATE = "vaebench.state"  # a key of STATUS
REASON = "vaebench.failure_reason"
OBJECTIVE = "vaebench.objective"
DIRECTION = "vaebench.direction"
SAMPLER = "vaebench.sampler"
STUDY_FILE = "vaebench.study_file"
LITERATURE = "vaebench.report.literature"  # on the parent: the study file's published numbers (JSON)
MODEL_URI = "vaebench.model_uri"  # set once a trial's run has the full artifact set
MODEL_FORMAT = "vaebench.model_format"  # that model's form: pt2 (standalone) or vaebench (light; pickle before)
# on every child run: where and with what it ran
VERSION = "vaebench.version"
TORCH_VERSION = "vaebench.torch_version"
MLFLOW_VERSION = "vaebench.mlflow_version"
OPTUNA_VERSION = "vaebench.optuna_version"
PYTHON_VERSION = "vaebench.python_version"
HOST = "vaebench.host"
DEVICE = "vaebench.device"
SEED = "vaebench.seed"
DATASET_FINGERPRINT = "vaebench.dataset_fingerprint"
OPTUNA_TRIAL_ID = "vaebench.optuna_trial_id"
RESUMED_AT_EPOCH = "vaebench.resumed_at_epoch"  # a trial that went on from a checkpoint: its first epoch
SKIPPED = "vaebench.skipped."  # + a metric's name: why that score is NaN (a capability the model lacks, ...)
# the generation scores' protocol (metrics.sampling), the same on every trial of a study
GENERATION_SHA256 = "vaebench.generation.feature_net_sha256"
GENERATION_SAMPLES = "vaebench.generation.samples"  # images per sampler
GENERATION_SEED = "vaebench.generation.seed"  # the sample seed
GENERATION_REFERENCE = "vaebench.generation.reference"  # JSON: {"real_data": {...}, "mean_image": {...}}
# MLflow's own tags
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the description the MLflow UI shows (an experiment's or a run's)
DESCRIPTION = "vaebench.description"  # the study file's description, on the parent (its note adds the best trial)
RUN_COLOR = "mlflow.runColor"  # a run's colour in the runs table and charts
DATA_CONTEXT = "mlflow.data.context"  # a dataset input's role: training, evaluation

# The one map from a vaebench state (the STATE tag; a trial's state is its Optuna TrialState
# name) to MLflow's run status. A parent run ends COMPLETE, INTERRUPTED or INCOMPLETE (trials
# failed; running the study again retries them).
STATUS = {
    "RUNNING": "RUNNING", "COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED",
    "INCOMPLETE": "FAILED", "INTERRUPTED": "KILLED",
}
_MAX_BATCH = 100  # MLflow's limit of params per log_batch call
_MAX_METRICS = 1000  # and of metrics
SYSTEM_METRICS = "system/"  # the prefix of MLflow's system metrics
FLUSH_S = 2.0  # longest a trial's per-epoch metrics wait before they are written


def quiet() -> None:
    """Keep MLflow's and its migrations' INFO chatter and download bars out of the progress bar."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's own "View run ... at: URL" lines (two per run ended on an HTTP server) repeat the
    # tracking URI, password included; vaebench prints its own links, redacted.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default (./mlflow.db)."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


def check_tracking_uri(uri: str, what: str = "tracking URI") -> None:
    """Fail fast on a tracking URI that cannot work (MLflow itself would retry an HTTP server
    for minutes); nothing is written."""
    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=10)
        except requests.RequestException as exc:
            raise InputError(f"{what} {redact(uri)}: unreachable ({short_reason(exc)})") from None
    elif scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        check_store_url(uri, f"{what} {redact(uri)}", kind="MLflow")
    else:  # file stores, unknown schemes: MLflow refuses them when the client is made, writing nothing
        try:
            MlflowClient(uri)
        except Exception as exc:  # noqa: BLE001 - whatever MLflow says about the URI
            raise InputError(f"{what} {redact(uri)}: {short_reason(exc)}") from None


def check_store_exists(uri: str, what: str = "tracking URI") -> None:
    """A local store file must be there already: reading a study back never creates one."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise InputError(f"{what} {redact(uri)}: no MLflow store there ({path} does not exist)")


def _now_ms() -> int:
    return int(time.time() * 1000)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """A metric that could not be computed is left out (shown empty), never logged as 0 or NaN."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


@dataclass
class TrialRun:
    """One trial's child run."""

    client: MlflowClient
    run_id: str
    flush_s: float = FLUSH_S
    buffer: list[Metric] = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)
    # What this object logged, for `link_metrics`: reading a run's metric history back costs
    # a query per metric, which was most of logging a trial's model.
    logged: dict[tuple[str, int], Metric] = field(default_factory=dict)  # (key, step) -> metric
    dataset: dict[str, str] = field(default_factory=dict)  # dataset_name, dataset_digest of its input

    def log_metrics(self, metrics: dict[str, float], step: int = 0, buffered: bool = False) -> None:
        """Logs in one batched call. `buffered` (per-epoch metrics) holds them until `flush_s`
        has passed since the last write, then writes all held epochs, steps and times kept,
        in one call: each write is a database transaction, costly beside a short epoch.
        `finish` (and an unbuffered call) writes what is held."""
        ts = _now_ms()
        new = [Metric(k, v, ts, step) for k, v in finite(metrics).items()]
        self.buffer += new
        self.logged |= {(m.key, m.step): m for m in new}
        if not buffered or time.monotonic() - self.flushed_at >= self.flush_s:
            self.flush()

    def log_final(self, metrics: dict[str, float]) -> None:
        """A trial's final scores at step 0: bars in the chart view, not a dot at the last
        epoch of a line; `log_model` links them to the model."""
        self.log_metrics(metrics, step=0)

    def flush(self) -> None:
        for i in range(0, len(self.buffer), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=self.buffer[i : i + _MAX_METRICS])
        self.buffer, self.flushed_at = [], time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, redact(str(v))) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_input(self, dataset: Any, context: str) -> None:
        """A dataset input of the run (an `mlflow.entities.Dataset`) in the role `context`."""
        from mlflow.entities import DatasetInput, InputTag

        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[InputTag(DATA_CONTEXT, context)])])
        self.dataset = {"dataset_name": dataset.name, "dataset_digest": dataset.digest}

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_json(self, doc: dict[str, Any], name: str) -> None:
        """`doc` as the JSON artifact `name` (e.g. the study's manifest.json on its parent run)."""
        self.client.log_dict(self.run_id, doc, name)

    def finish(self, state: str, reason: str | None = None) -> None:
        self.flush()
        tags = {STATE: state} | ({REASON: reason[:4000]} if reason else {})
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=STATUS[state])

    def status(self) -> str:
        """MLflow's status of the run: RUNNING, FINISHED, FAILED or KILLED."""
        return self.client.get_run(self.run_id).info.status

    def tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    def metrics(self) -> dict[str, float]:
        """Each metric's latest value, as the report reads it."""
        return self.client.get_run(self.run_id).data.metrics

    def download(self, path: str, folder: str) -> str:
        """The run's artifact `path`, copied into `folder`; returns the local file."""
        return self.client.download_artifacts(self.run_id, path, folder)

    def log_model(
        self, flavor: Any, experiment_id: str, name: str, params: dict[str, Any], step: int,
        model_format: str, model_type: str | None = None, **kwargs: Any,
    ) -> str:
        """A model of the MLflow `flavor` module (`mlflow.pytorch`, `mlflow.pyfunc`; `kwargs` go
        to its save_model) as a logged model of this run, created in `experiment_id` (the
        study's, not the process's active experiment), named `name` with `params` and
        `model_type`, output at `step`, linked to the metrics of that step and to the final
        scores (step 0) with the run's dataset. The run gets its URI (MODEL_URI) and
        `model_format` (MODEL_FORMAT) as tags in the write that links them. Returns the URI.

        These are the steps of MLflow's `Model.log`, through public client calls, for two
        reasons: it takes the run id (pyfunc's log_model would need the process's active run),
        and it links metrics by reading every metric's history back, a query per metric,
        where this run knows what it logged (`link_metrics`)."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        logged = self.client.create_logged_model(experiment_id, name=name, source_run_id=self.run_id,
                                                 params={k: str(v) for k, v in params.items()}, model_type=model_type)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = os.path.join(tmp, "model")
                meta = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=self.run_id,
                             model_id=logged.model_id)
                flavor.save_model(path=folder, mlflow_model=meta, **kwargs)
                self.client.log_model_artifacts(logged.model_id, folder)
            uri = f"models:/{logged.model_id}"
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step)])
            self.link_metrics(logged.model_id, step, tags={MODEL_URI: uri, MODEL_FORMAT: model_format})
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return uri

    def delete_models(self, experiment_id: str, model_type: str) -> None:
        """Deletes this run's logged models of `model_type` (replaced by another kind). Only
        that kind: a worker may be logging another model of the same kind meanwhile."""
        for logged in self.client.search_logged_models(experiment_ids=[experiment_id],
                                                       filter_string=f"source_run_id = '{self.run_id}'"):
            if logged.model_type == model_type:
                self.client.delete_logged_model(logged.model_id)

    def link_metrics(self, model_id: str, step: int, tags: dict[str, str] | None = None) -> None:
        """Links the run's metrics of `step` and its final scores (step 0, with the run's dataset)
        to `model_id`: the Models tab's metric columns. From what this object logged; read back
        from MLflow when it logged nothing at `step` (a run reopened to log the study's best
        model, or a trial resumed after its last epoch). Logged again with the same time stamps,
        the run's own metrics are unchanged (MLflow drops the duplicates). `tags` go in the
        same write."""
        self.flush()
        metrics, dataset = list(self.logged.values()), self.dataset
        if not any(m.step == step for m in metrics):
            run = self.client.get_run(self.run_id)
            inputs = run.inputs.dataset_inputs if run.inputs else []
            dataset = {"dataset_name": inputs[0].dataset.name, "dataset_digest": inputs[0].dataset.digest} if inputs else {}
            metrics = [m for key in run.data.metrics if not key.startswith(SYSTEM_METRICS)
                       for m in self.client.get_metric_history(self.run_id, key)]
        linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, **(dataset if m.step == 0 else {}))
                  for m in metrics if m.step in (0, step)]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(linked), 1), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=linked[i : i + _MAX_METRICS], tags=run_tags if i == 0 else [])


@dataclass
class StudyTracker:
    """The study's experiment; creates the parent run and the trials' child runs."""

    client: MlflowClient
    experiment_id: str
    study: str

    @classmethod
    def open(cls, tracking_uri: str, study: str) -> StudyTracker:
        try:
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(study)
        except Exception as exc:  # noqa: BLE001 - a store MLflow cannot open is a bad --tracking-uri
            raise InputError(f"tracking URI {redact(tracking_uri)}: cannot open ({short_reason(exc)})") from None
        if experiment is None:
            try:
                return cls(client, client.create_experiment(study), study)
            except MlflowException:  # another worker created it first
                experiment = client.get_experiment_by_name(study)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return cls(client, experiment.experiment_id, study)

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def run(self, run_id: str) -> TrialRun:
        """A run of this store by id (a trial's child run or the study's parent run)."""
        return TrialRun(self.client, run_id)

    def set_experiment_tag(self, key: str, value: str) -> None:
        self.client.set_experiment_tag(self.experiment_id, key, value)

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def has_run(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False

    def create_parent(self, tags: dict[str, Any], params: dict[str, Any]) -> str:
        """The study's parent run, with `tags` (names from this module) and `params`."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={STUDY: self.study, ROLE: "study"} | {k: redact(str(v)) for k, v in tags.items()},
        )
        TrialRun(self.client, run.info.run_id).log_params(params)
        return run.info.run_id

    def resolve_parent(self, mine: str, window_s: float) -> str:
        """Of the parent runs started up to `window_s` before `mine` and not ended (a state tag
        other than RUNNING: a finished study of the same name), the earliest by (start_time,
        run_id): workers that raced to create the study's parent run all pick the same one, on
        any machine, with no lock."""
        start = self.client.get_run(mine).info.start_time
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{ROLE}` = 'study' and attributes.start_time >= {start - int(window_s * 1000)}",
            max_results=1000,
        )
        live = [(r.info.start_time, r.info.run_id) for r in found if r.data.tags.get(STATE, "RUNNING") == "RUNNING"]
        return min(live + [(start, mine)])[1]

    def reopen(self, run_id: str) -> None:
        """A resumed study's parent run is RUNNING again while a worker works on it."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            TrialRun(self.client, run_id).set_tags({STATE: "RUNNING"})

    def end_parent(self, run_id: str, state: str, summary: dict[str, float]) -> None:
        """COMPLETE, INTERRUPTED or INCOMPLETE (trials failed), with the study's summary metrics."""
        parent = TrialRun(self.client, run_id)
        parent.log_metrics(summary)
        parent.set_tags({STATE: state})
        self.client.set_terminated(run_id, status=STATUS[state])

    def running_children(self, parent_id: str) -> list[Any]:
        """Child runs of `parent_id` still marked RUNNING (live trials, or orphans of dead workers)."""
        return self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )

    def start_trial(self, parent_id: str, number: int, name: str, tags: dict[str, Any]) -> TrialRun:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={STUDY: self.study, ROLE: "trial", TRIAL: str(number), PARENT: parent_id}
            | {k: redact(str(v)) for k, v in tags.items()},
        )
        return TrialRun(self.client, run.info.run_id)

    def resume_trial(self, run_id: str, number: int, tags: dict[str, Any]) -> TrialRun | None:
        """The child run `run_id` RUNNING again for trial `number`, which continues it from a
        checkpoint; None when the run is gone or belongs to another study or parent."""
        if not self.has_run(run_id):
            return None
        self.client.update_run(run_id, status="RUNNING")
        run = TrialRun(self.client, run_id)
        run.set_tags({TRIAL: str(number), STATE: "RUNNING", REASON: ""} | tags)
        return run
